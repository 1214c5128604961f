{{- define "endpointctl.fullname" -}}
{{- printf "%s-endpointctl" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "endpointctl.labels" -}}
app.kubernetes.io/name: endpointctl
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "endpointctl.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "endpointctl.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{/* The API's own ServiceAccount: reads pods and their logs, nothing else (templates/rbac.yaml). */}}
{{- define "endpointctl.apiServiceAccountName" -}}
{{- if .Values.apiServiceAccount.create -}}{{ default (printf "%s-api" (include "endpointctl.fullname" .)) .Values.apiServiceAccount.name }}{{- else -}}{{ default "default" .Values.apiServiceAccount.name }}{{- end -}}
{{- end -}}

{{/* The Secret holding the scrape token (key `token`): the user's, or the one templates/metrics-secret.yaml makes. */}}
{{- define "endpointctl.metricsSecretName" -}}
{{- default (printf "%s-metrics" (include "endpointctl.fullname" .)) .Values.metrics.token.existingSecret -}}
{{- end -}}

{{/* Environment shared by the API, the worker and beat: they must agree on database, broker and provider. */}}
{{- define "endpointctl.env" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ default (printf "%s-settings" (include "endpointctl.fullname" .)) .Values.database.existingSecret }}
      key: url
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ default (printf "%s-settings" (include "endpointctl.fullname" .)) .Values.redis.existingSecret }}
      key: {{ ternary "url" "redis-url" (ne .Values.redis.existingSecret "") }}
- name: ENDPOINTCTL_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ default (printf "%s-settings" (include "endpointctl.fullname" .)) .Values.adminToken.existingSecret }}
      key: {{ ternary "token" "admin-token" (ne .Values.adminToken.existingSecret "") }}
- name: ENDPOINTCTL_SECRETS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ default (printf "%s-settings" (include "endpointctl.fullname" .)) .Values.secretsKey.existingSecret }}
      key: {{ ternary "key" "secrets-key" (ne .Values.secretsKey.existingSecret "") }}
- name: ENDPOINTCTL_PUBLIC_URL
  value: {{ .Values.publicUrl | quote }}
- name: ENDPOINTCTL_PROVIDER
  value: kubernetes
- name: ENDPOINTCTL_MIGRATE_ON_START
  value: "false"
- name: ENDPOINTCTL_K8S_NAMESPACE
  value: {{ .Values.provider.endpointsNamespace | quote }}
- name: ENDPOINTCTL_K8S_RUNTIME_IMAGE
  value: {{ .Values.provider.runtimeImage | quote }}
{{- with .Values.provider.downloaderImage }}
- name: ENDPOINTCTL_K8S_DOWNLOADER_IMAGE
  value: {{ . | quote }}
{{- end }}
- name: ENDPOINTCTL_K8S_IMAGE_PULL_SECRETS
  value: {{ .Values.provider.endpointImagePullSecrets | toJson | quote }}
{{- with .Values.provider.storageClass }}
- name: ENDPOINTCTL_K8S_STORAGE_CLASS
  value: {{ . | quote }}
{{- end }}
- name: ENDPOINTCTL_K8S_MODEL_CACHE_SIZE
  value: {{ .Values.provider.modelCacheSize | quote }}
- name: ENDPOINTCTL_K8S_SHM_SIZE
  value: {{ .Values.provider.shmSize | quote }}
- name: ENDPOINTCTL_K8S_EXTRA_LABELS
  value: {{ .Values.provider.extraLabels | toJson | quote }}
- name: ENDPOINTCTL_K8S_EXTRA_ANNOTATIONS
  value: {{ .Values.provider.extraAnnotations | toJson | quote }}
- name: ENDPOINTCTL_K8S_TOLERATIONS
  value: {{ .Values.provider.tolerations | toJson | quote }}
- name: ENDPOINTCTL_K8S_NODE_FAILURE_TOLERATION_SECONDS
  value: {{ .Values.provider.nodeFailureTolerationSeconds | quote }}
- name: ENDPOINTCTL_K8S_STARTUP_TIMEOUT_SECONDS
  value: {{ .Values.provider.startupTimeoutSeconds | quote }}
- name: ENDPOINTCTL_K8S_PROGRESS_DEADLINE_SECONDS
  value: {{ .Values.provider.progressDeadlineSeconds | quote }}
{{- with .Values.provider.hubTokenSecret }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: token
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}
