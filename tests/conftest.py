pytest_plugins = ["envtest.pytest_plugin"]
