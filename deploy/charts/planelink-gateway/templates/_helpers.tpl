{{- define "planelink-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "planelink-gateway.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "planelink-gateway.labels" -}}
app.kubernetes.io/name: {{ include "planelink-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "planelink-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "planelink-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
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
