"""planelink: the command line and process set-up that tie the packages together."""
