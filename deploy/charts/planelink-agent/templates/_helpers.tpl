{{- define "planelink-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /* The prefix of every object's name: fullnameOverride, else the release name when it
already holds the chart's name (release "planelink-agent" makes "planelink-agent", not
"planelink-agent-planelink-agent"), else "<release>-<name>". */ -}}
{{- define "planelink-agent.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- /* Every object's labels: the chart's own, and commonLabels beside them (never instead). */ -}}
{{- define "planelink-agent.labels" -}}
{{- $own := include "planelink-agent.selectorLabels" . | fromYaml }}
{{- $_ := set $own "app.kubernetes.io/version" .Chart.AppVersion }}
{{- $_ := set $own "app.kubernetes.io/managed-by" .Release.Service }}
{{- $_ := set $own "helm.sh/chart" (printf "%s-%s" .Chart.Name .Chart.Version) }}
{{- toYaml (merge $own (.Values.commonLabels | default dict)) }}
{{- end }}

{{- define "planelink-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "planelink-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- /* The pod's labels: the selector's (which podLabels and commonLabels can never change, or
the Deployment would lose its pods), podLabels, then commonLabels. */ -}}
{{- define "planelink-agent.podLabels" -}}
{{- $labels := include "planelink-agent.selectorLabels" . | fromYaml }}
{{- toYaml (merge $labels (.Values.podLabels | default dict) (.Values.commonLabels | default dict)) }}
{{- end }}

{{- /* The pod's annotations: podAnnotations, and Prometheus's scrape annotations unless
metrics.scrapeAnnotations is false (podAnnotations win over them). Empty when there are none. */ -}}
{{- define "planelink-agent.podAnnotations" -}}
{{- $annotations := deepCopy (.Values.podAnnotations | default dict) }}
{{- if .Values.metrics.scrapeAnnotations }}
{{- $scrape := dict "prometheus.io/scrape" "true" "prometheus.io/port" "8080" "prometheus.io/path" "/metrics" }}
{{- $annotations = merge $annotations $scrape }}
{{- end }}
{{- with $annotations }}{{ toYaml . }}{{ end }}
{{- end }}

{{- /* The pod spec's placement and scheduling values. A spread constraint without a labelSelector
spreads this release's pods. */ -}}
{{- define "planelink-agent.scheduling" -}}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.topologySpreadConstraints }}
{{- $ownPods := dict "matchLabels" (include "planelink-agent.selectorLabels" $ | fromYaml) }}
topologySpreadConstraints:
  {{- range . }}
  {{- $constraint := deepCopy . }}
  {{- if not (hasKey $constraint "labelSelector") }}
  {{- $_ := set $constraint "labelSelector" $ownPods }}
  {{- end }}
  - {{ toYaml $constraint | indent 4 | trim }}
  {{- end }}
{{- end }}
{{- end }}

{{- /* The global options before the command (`planelink <options> gateway`): given after the
image's own `--log-format json`, they win over it. */ -}}
{{- define "planelink-agent.logArgs" -}}
"--log-level", {{ .Values.logLevel | quote }}, "--log-format", {{ .Values.logFormat | quote }}
{{- end }}

{{- define "planelink-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "planelink-agent.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- /* The read-only default: named resources per group, never Secrets or a subresource that
runs, forwards or proxies anything (pods/log only reads). */ -}}
{{- define "planelink-agent.readOnlyRules" -}}
- apiGroups: [""]
  resources: ["pods", "pods/log", "pods/status", "services", "endpoints", "configmaps", "events", "namespaces", "nodes", "persistentvolumeclaims", "persistentvolumes", "replicationcontrollers", "serviceaccounts", "limitranges", "resourcequotas"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["apps"]
  resources: ["deployments", "deployments/status", "replicasets", "statefulsets", "daemonsets", "controllerrevisions"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["batch"]
  resources: ["jobs", "cronjobs"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses", "ingressclasses", "networkpolicies"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["storage.k8s.io"]
  resources: ["storageclasses"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{- /* "true" when the ServiceMonitor is rendered: asked for, and the cluster serves the kind
(Prometheus Operator's CRD), so that an install without it does not fail. NOTES.txt says when
it was asked for and left out. */ -}}
{{- define "planelink-agent.serviceMonitor" -}}
{{- if and .Values.metrics.serviceMonitor.enabled (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor") }}true{{ end }}
{{- end }}

{{- /* What callers may do in this cluster, in words (the agent's ClusterRole, rbac.*). */ -}}
{{- define "planelink-agent.grants" -}}
{{- if not .Values.rbac.create }}whatever the service account {{ include "planelink-agent.serviceAccountName" . }} is granted outside this chart
{{- else if .Values.rbac.clusterAdmin }}everything (rbac.clusterAdmin)
{{- else }}
{{- $grants := list }}
{{- if .Values.rbac.readOnly }}{{ $grants = append $grants "read-only (get, list, watch; no Secrets)" }}{{ end }}
{{- range $opt := list "secrets" "exec" "portForward" "proxy" "impersonate" }}
{{- if index $.Values.rbac $opt }}{{ $grants = append $grants (printf "rbac.%s" $opt) }}{{ end }}
{{- end }}
{{- if .Values.rbac.rules }}{{ $grants = append $grants (printf "%d rule(s) of rbac.rules" (len .Values.rbac.rules)) }}{{ end }}
{{- if $grants }}{{ join ", " $grants }}{{ else }}nothing (rbac.readOnly is false and no opt-in is set){{ end }}
{{- end }}
{{- end }}
