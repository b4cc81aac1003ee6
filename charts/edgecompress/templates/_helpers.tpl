{{- define "edgecompress.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "edgecompress.operatorName" -}}
{{- printf "%s-operator" (include "edgecompress.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "edgecompress.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: edgecompress
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "edgecompress.selectorLabels" -}}
app.kubernetes.io/name: edgecompress-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "edgecompress.serviceAccountName" -}}
{{- default (include "edgecompress.operatorName" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "edgecompress.image" -}}
{{- printf "%s:%s" .repository (default .appVersion .tag) -}}
{{- end -}}

{{- define "edgecompress.runnerImage" -}}
{{- default (include "edgecompress.image" (dict "repository" .Values.image.runner.repository "tag" .Values.image.runner.tag "appVersion" .Chart.AppVersion)) .Values.operator.config.runnerImage -}}
{{- end -}}
