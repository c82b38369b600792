{{/* Names, labels and images shared by the templates. */}}

{{- define "logicbundle.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "logicbundle.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "logicbundle.selectorLabels" -}}
app.kubernetes.io/name: {{ include "logicbundle.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "logicbundle.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "logicbundle.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: logicbundle
{{- end -}}

{{- define "logicbundle.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "logicbundle.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag[@digest] */}}
{{- define "logicbundle.imageRef" -}}
{{- $ref := printf "%s:%s" .repository .tag -}}
{{- if .digest -}}{{- $ref = printf "%s@%s" $ref .digest -}}{{- end -}}
{{- $ref -}}
{{- end -}}

{{- define "logicbundle.image" -}}
{{- include "logicbundle.imageRef" (dict "repository" .Values.image.repository "tag" (default .Chart.AppVersion .Values.image.tag) "digest" .Values.image.digest) -}}
{{- end -}}

{{/* The agent image: agentImage, each empty field falling back to image. */}}
{{- define "logicbundle.agentImage" -}}
{{- $a := .Values.agentImage -}}
{{- $repository := default .Values.image.repository $a.repository -}}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) $a.tag -}}
{{- $digest := $a.digest -}}
{{- if and (not $a.repository) (not $a.tag) (not $a.digest) -}}{{- $digest = .Values.image.digest -}}{{- end -}}
{{- include "logicbundle.imageRef" (dict "repository" $repository "tag" $tag "digest" $digest) -}}
{{- end -}}

{{/* Fixed by the operator (logicbundle.webhook): one injector per cluster. */}}
{{- define "logicbundle.webhookConfigurationName" -}}logicbundle-injector{{- end -}}
{{- define "logicbundle.webhookSecretName" -}}logicbundle-webhook-tls{{- end -}}
{{- define "logicbundle.webhookServiceName" -}}{{ include "logicbundle.fullname" . }}-webhook{{- end -}}
{{- define "logicbundle.distributorServiceName" -}}{{ include "logicbundle.fullname" . }}-distributor{{- end -}}
{{- define "logicbundle.upstreamServiceName" -}}{{ include "logicbundle.fullname" . }}-upstream{{- end -}}
{{- define "logicbundle.distributorAccountName" -}}{{ include "logicbundle.fullname" . }}-distributor{{- end -}}
{{- define "logicbundle.statusReaderName" -}}{{ include "logicbundle.fullname" . }}-status-reader{{- end -}}
{{- define "logicbundle.metricsServiceName" -}}{{ include "logicbundle.fullname" . }}-metrics{{- end -}}

{{- define "logicbundle.distributorTlsSecretName" -}}
{{- default (printf "%s-distributor-tls" (include "logicbundle.fullname" .)) .Values.distributor.tls.existingSecret -}}
{{- end -}}

{{- define "logicbundle.distributorUrl" -}}
https://{{ include "logicbundle.distributorServiceName" . }}.{{ .Release.Namespace }}.svc:{{ .Values.distributor.service.port }}
{{- end -}}

{{/* Namespaces that get the trust objects. */}}
{{- define "logicbundle.trustNamespaces" -}}
{{- if .Values.trust.namespaces -}}{{ toJson .Values.trust.namespaces }}{{- else -}}{{ toJson (list .Release.Namespace) }}{{- end -}}
{{- end -}}

{{/*
Namespaces left out of a cluster-wide operator (watchNamespaces empty), as
logicbundle.api.namespaces.ServedNamespaces computes them: the system ones,
the release namespace, excludeNamespaces and webhook.excludeNamespaces.
The operator, the distributor replicas and the webhook get the same set.
*/}}
{{- define "logicbundle.excludedNamespaces" -}}
{{- concat (list "kube-system" "kube-public" "kube-node-lease" .Release.Namespace) .Values.excludeNamespaces .Values.webhook.excludeNamespaces | uniq | sortAlpha | toJson -}}
{{- end }}

{{/* Namespaces whose Secrets the operator may read: a RoleBinding in each ("*": all). */}}
{{- define "logicbundle.secretNamespaces" -}}
{{- if .Values.rbac.secretNamespaces -}}{{ toJson .Values.rbac.secretNamespaces }}
{{- else if .Values.watchNamespaces -}}{{ toJson .Values.watchNamespaces }}
{{- else -}}{{ toJson .Values.trust.namespaces }}
{{- end -}}
{{- end }}

{{/*
The OTEL_* environment of the processes that export rollout traces (the operator and the
distributor replicas): nothing unless tracing.endpoint is set (docs/tracing.md).
*/}}
{{- define "logicbundle.tracingEnv" -}}
{{- with .Values.tracing }}
{{- if .endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .endpoint | quote }}
{{- range $name, $value := .env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- range $name, $ref := .secretEnv }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.name | quote }}
      key: {{ $ref.key | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The pod securityContext: podSecurityContext (a null value unsets a default, e.g.
runAsUser on OpenShift, which assigns its own), runAsNonRoot always true.
*/}}
{{- define "logicbundle.podSecurityContext" -}}
{{- $context := deepCopy (default (dict) .Values.podSecurityContext) -}}
{{- $_ := set $context "runAsNonRoot" true -}}
{{- toYaml $context -}}
{{- end -}}

{{/*
A container securityContext: securityContext, with the hardening no value can
weaken set on top (set, not merge: merge would let a `true` replace a `false`).
*/}}
{{- define "logicbundle.securityContext" -}}
{{- $context := deepCopy (default (dict) .Values.securityContext) -}}
{{- $_ := set $context "runAsNonRoot" true -}}
{{- $_ = set $context "readOnlyRootFilesystem" true -}}
{{- $_ = set $context "allowPrivilegeEscalation" false -}}
{{- $_ = set $context "privileged" false -}}
{{- $_ = set $context "capabilities" (dict "drop" (list "ALL")) -}}
{{- toYaml $context -}}
{{- end -}}
