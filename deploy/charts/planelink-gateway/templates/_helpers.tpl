{{- define "planelink-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /* The prefix of every object's name: fullnameOverride, else the release name when it
already holds the chart's name (release "planelink-gateway" makes "planelink-gateway", not
"planelink-gateway-planelink-gateway"), else "<release>-<name>". */ -}}
{{- define "planelink-gateway.fullname" -}}
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
{{- define "planelink-gateway.labels" -}}
{{- $own := include "planelink-gateway.selectorLabels" . | fromYaml }}
{{- $_ := set $own "app.kubernetes.io/version" .Chart.AppVersion }}
{{- $_ := set $own "app.kubernetes.io/managed-by" .Release.Service }}
{{- $_ := set $own "helm.sh/chart" (printf "%s-%s" .Chart.Name .Chart.Version) }}
{{- toYaml (merge $own (.Values.commonLabels | default dict)) }}
{{- end }}

{{- define "planelink-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "planelink-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- /* The pod's labels: the selector's (which podLabels and commonLabels can never change, or
the Deployment would lose its pods), podLabels, then commonLabels. */ -}}
{{- define "planelink-gateway.podLabels" -}}
{{- $labels := include "planelink-gateway.selectorLabels" . | fromYaml }}
{{- toYaml (merge $labels (.Values.podLabels | default dict) (.Values.commonLabels | default dict)) }}
{{- end }}

{{- /* The pod's annotations: podAnnotations, and Prometheus's scrape annotations unless
metrics.scrapeAnnotations is false (podAnnotations win over them). Empty when there are none. */ -}}
{{- define "planelink-gateway.podAnnotations" -}}
{{- $annotations := deepCopy (.Values.podAnnotations | default dict) }}
{{- if .Values.metrics.scrapeAnnotations }}
{{- $scrape := dict "prometheus.io/scrape" "true" "prometheus.io/port" (toString .Values.service.operatorPort) "prometheus.io/path" "/metrics" }}
{{- $annotations = merge $annotations $scrape }}
{{- end }}
{{- with $annotations }}{{ toYaml . }}{{ end }}
{{- end }}

{{- /* The pod spec's placement and scheduling values. A spread constraint without a labelSelector
spreads this release's pods. */ -}}
{{- define "planelink-gateway.scheduling" -}}
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
{{- $ownPods := dict "matchLabels" (include "planelink-gateway.selectorLabels" $ | fromYaml) }}
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
{{- define "planelink-gateway.logArgs" -}}
"--log-level", {{ .Values.logLevel | quote }}, "--log-format", {{ .Values.logFormat | quote }}
{{- end }}

{{- define "planelink-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "planelink-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- /* Scaled out: more than one replica in the sense of the scale-out design (pods, or worker
processes in a pod, each with its own id). They find each other through Leases and forward
callers to the replica holding a plane's tunnel over the peer port. */ -}}
{{- define "planelink-gateway.scaledOut" -}}
{{- if or (gt (int .Values.replicaCount) 1) (gt (int .Values.workers) 1) }}true{{ end }}
{{- end }}

{{- /* A resource quantity ("100m", "128Mi", "2", "0.5") times the workers of a pod: each
worker is a process of its own with its own heap and its own core's worth of work. */ -}}
{{- define "planelink-gateway.perPod" -}}
{{- $quantity := toString .quantity }}
{{- $number := regexFind "^[0-9.]+" $quantity }}
{{- $unit := trimPrefix $number $quantity }}
{{- if contains "." $number }}
{{- printf "%s%s" (toString (mulf (float64 $number) .workers)) $unit }}
{{- else }}
{{- printf "%d%s" (mul (int64 $number) .workers) $unit }}
{{- end }}
{{- end }}

{{- /* .Values.resources with every request and limit scaled by the workers of a pod. */ -}}
{{- define "planelink-gateway.resources" -}}
{{- $workers := int .Values.workers }}
{{- $scaled := dict }}
{{- range $kind, $quantities := .Values.resources }}
{{- $each := dict }}
{{- range $name, $quantity := $quantities }}
{{- $_ := set $each $name (include "planelink-gateway.perPod" (dict "quantity" $quantity "workers" $workers)) }}
{{- end }}
{{- $_ := set $scaled $kind $each }}
{{- end }}
{{- toYaml $scaled }}
{{- end }}

{{- /* "true" when the ServiceMonitor is rendered: asked for, and the cluster serves the kind
(Prometheus Operator's CRD), so that an install without it does not fail. NOTES.txt says when
it was asked for and left out. */ -}}
{{- define "planelink-gateway.serviceMonitor" -}}
{{- if and .Values.metrics.serviceMonitor.enabled (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor") }}true{{ end }}
{{- end }}
