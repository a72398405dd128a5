{{/*
The chart's name, or nameOverride.
*/}}
{{- define "kube-fencer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The objects' base name: fullnameOverride, else the release name when it
contains the chart's name (release "kube-fencer": "kube-fencer"), else
"<release>-<name>".
*/}}
{{- define "kube-fencer.fullname" -}}
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

{{/*
"<chart>-<version>", for whoever wants a helm.sh/chart label (commonLabels).
*/}}
{{- define "kube-fencer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: immutable in the DaemonSet, so only the name (as in the
plain manifests, which kubectl-applied clusters already run).
*/}}
{{- define "kube-fencer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-fencer.name" . }}
{{- end }}

{{/*
Labels of every object: the selector labels and commonLabels. No Helm-only
labels (helm.sh/chart, app.kubernetes.io/instance, ...): the plain manifests
are rendered from this chart and must not claim Helm manages them; Helm
itself adds app.kubernetes.io/managed-by and its release annotations to what
it installs.
*/}}
{{- define "kube-fencer.labels" -}}
{{ include "kube-fencer.selectorLabels" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "kube-fencer.serviceAccountName" -}}
{{ include "kube-fencer.fullname" . }}
{{- end }}

{{/*
fencing.mode, checked.
*/}}
{{- define "kube-fencer.mode" -}}
{{- $mode := .Values.fencing.mode }}
{{- if not (has $mode (list "selfFence" "fenceCommand")) }}
{{- fail (printf "fencing.mode must be selfFence or fenceCommand, not %q" (toString $mode)) }}
{{- end }}
{{- $mode }}
{{- end }}

{{- define "kube-fencer.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The --fence-command value: the command and its args, each single-quoted.
*/}}
{{- define "kube-fencer.fenceCommand" -}}
{{- $words := list .Values.fencing.fenceCommand.command }}
{{- range .Values.fencing.fenceCommand.args }}
{{- $words = append $words (printf "'%s'" (replace "'" "'\\''" (toString .))) }}
{{- end }}
{{- join " " $words }}
{{- end }}
