{{- define "aliasd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The name of every object: "aliasd" for a release named aliasd, as in manifests/base.
At most 53 characters: the hook Job's name adds "-uninstall", and a Job's name
becomes a label value (63 at most). */}}
{{- define "aliasd.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 53 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 53 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 53 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "aliasd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aliasd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "aliasd.labels" -}}
{{ include "aliasd.selectorLabels" . }}
app.kubernetes.io/part-of: aliasd
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "aliasd.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The cluster DNS ConfigMaps aliasd may edit: the four well-known ones and the configured one. */}}
{{- define "aliasd.corednsConfigMaps" -}}
{{- $names := list "coredns" "coredns-custom" "kube-dns" "node-local-dns" -}}
{{- $ref := splitList "/" .Values.coredns.configMap -}}
{{- if not (has (last $ref) $names) -}}{{- $names = append $names (last $ref) -}}{{- end -}}
{{- toJson $names -}}
{{- end -}}

{{- define "aliasd.corednsNamespace" -}}
{{- first (splitList "/" .Values.coredns.configMap) -}}
{{- end -}}

{{/* Environment shared by the Deployment and the uninstall hook: only what differs
from aliasd's defaults, so the default values give manifests/base's environment. */}}
{{- define "aliasd.wiringEnv" -}}
{{- $full := include "aliasd.fullname" . -}}
{{- if ne .Values.coredns.mode "auto" }}
- name: ALIASD_COREDNS_MODE
  value: {{ .Values.coredns.mode | quote }}
{{- end }}
{{- if ne .Values.coredns.configMap "kube-system/coredns" }}
- name: ALIASD_COREDNS_CONFIGMAP
  value: {{ .Values.coredns.configMap | quote }}
{{- end }}
{{- if .Values.coredns.forwardTo }}
- name: ALIASD_FORWARD_TO
  value: {{ .Values.coredns.forwardTo | quote }}
{{- end }}
{{- if ne $full "aliasd" }}
- name: ALIASD_LEADER_LEASE
  value: {{ printf "%s/%s" .Release.Namespace $full | quote }}
- name: ALIASD_DNS_SERVICE
  value: {{ printf "%s/%s" .Release.Namespace $full | quote }}
{{- end }}
{{- if ne .Values.logFormat "text" }}
- name: ALIASD_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- end }}
{{- if ne .Values.logLevel "info" }}
- name: ALIASD_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- end }}
{{- end -}}
