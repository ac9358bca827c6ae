{{/* Chart name, truncated to the 63 characters a label value may have. */}}
{{- define "twilio-kafka-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: the release name, plus the chart name unless it
contains it already. */}}
{{- define "twilio-kafka-bridge.fullname" -}}
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

{{- define "twilio-kafka-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "twilio-kafka-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "twilio-kafka-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "twilio-kafka-bridge.labels" -}}
helm.sh/chart: {{ include "twilio-kafka-bridge.chart" . }}
{{ include "twilio-kafka-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "twilio-kafka-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "twilio-kafka-bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "twilio-kafka-bridge.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Where Secrets are mounted. */}}
{{- define "twilio-kafka-bridge.secretsDir" -}}/var/run/secrets/twilio-bridge{{- end }}
{{- define "twilio-kafka-bridge.kafkaTlsDir" -}}/etc/twilio-bridge/kafka-tls{{- end }}
{{- define "twilio-kafka-bridge.specsDir" -}}/etc/twilio-bridge/specs{{- end }}

{{/* terminationGracePeriodSeconds: everything SIGTERM may have to wait for: the drain delay
(webhooks still answered), the grace (in-flight requests) and the margin. */}}
{{- define "twilio-kafka-bridge.terminationGracePeriodSeconds" -}}
{{- with .Values.shutdown }}
{{- add .drainDelaySeconds .graceSeconds .marginSeconds }}
{{- end }}
{{- end }}

{{/* A value as the string an environment variable holds; whole numbers without exponent. */}}
{{- define "twilio-kafka-bridge.envString" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* Settings the Deployment sets itself, from structured values; config may not set them. */}}
{{- define "twilio-kafka-bridge.managedSettings" -}}
{{- list "BRIDGE_HTTP__PORT" "BRIDGE_PROCESSING__SHUTDOWN_GRACE_S" "BRIDGE_HTTP__DRAIN_DELAY_S" "BRIDGE_SECRETS_DIR" "BRIDGE_KAFKA__SSL_CAFILE" "BRIDGE_KAFKA__SSL_CERTFILE" "BRIDGE_KAFKA__SSL_KEYFILE" "BRIDGE_KAFKA__SASL_PASSWORD" "BRIDGE_ADMIN__ENABLED" "BRIDGE_ADMIN__TOPIC" "BRIDGE_ADMIN__AUDIT_TOPIC" "BRIDGE_ADMIN__WRITE_TIMEOUT_S" "BRIDGE_CATALOG__SPEC_DIR" | toJson }}
{{- end }}

{{/* Names of settings that are secrets: never in the ConfigMap, never a literal value. */}}
{{- define "twilio-kafka-bridge.secretPattern" -}}
(AUTH_TOKEN|API_KEY_SECRET|SASL_PASSWORD|SHARED_KEYS|ADMIN__TOKEN|ADMIN__ENCRYPTION_KEY)
{{- end }}

{{/* The ConfigMap's settings as a JSON object: the structured values, then config. */}}
{{- define "twilio-kafka-bridge.settings" -}}
{{- $structured := dict "BRIDGE_KAFKA__SECURITY_PROTOCOL" .Values.kafka.securityProtocol }}
{{- with .Values.kafka.bootstrapServers }}
{{- $_ := set $structured "BRIDGE_KAFKA__BOOTSTRAP_SERVERS" . }}
{{- end }}
{{- with .Values.kafka.requestTopics }}
{{- $_ := set $structured "BRIDGE_KAFKA__REQUEST_TOPICS" (join "," .) }}
{{- end }}
{{- with .Values.kafka.groupId }}
{{- $_ := set $structured "BRIDGE_KAFKA__GROUP_ID" . }}
{{- end }}
{{- with .Values.kafka.sasl.mechanism }}
{{- $_ := set $structured "BRIDGE_KAFKA__SASL_MECHANISM" . }}
{{- end }}
{{- with .Values.kafka.sasl.username }}
{{- $_ := set $structured "BRIDGE_KAFKA__SASL_USERNAME" . }}
{{- end }}
{{- with .Values.webhook.publicUrl }}
{{- $_ := set $structured "BRIDGE_WEBHOOK__PUBLIC_URL" . }}
{{- end }}
{{- with .Values.admin }}
{{- if .enabled }}
{{- $_ := set $structured "BRIDGE_ADMIN__ENABLED" "true" }}
{{- $_ := set $structured "BRIDGE_ADMIN__TOPIC" .topic }}
{{- $_ := set $structured "BRIDGE_ADMIN__AUDIT_TOPIC" .auditTopic }}
{{- $_ := set $structured "BRIDGE_ADMIN__WRITE_TIMEOUT_S" (include "twilio-kafka-bridge.envString" .writeTimeoutSeconds) }}
{{- end }}
{{- end }}
{{- $managed := include "twilio-kafka-bridge.managedSettings" . | fromJsonArray }}
{{- $settings := deepCopy $structured }}
{{- range $name, $value := .Values.config }}
{{- if has $name $managed }}
{{- fail (printf "config.%s is set by the chart from its structured values (see values.yaml); remove it from config" $name) }}
{{- end }}
{{- if regexMatch (include "twilio-kafka-bridge.secretPattern" $) $name }}
{{- fail (printf "config.%s is a secret: put it in twilio.existingSecret or admin.existingSecret (as a file) or extraEnv (valueFrom), never in the ConfigMap" $name) }}
{{- end }}
{{- if hasKey $structured $name }}
{{- fail (printf "config.%s is also given by a structured value (kafka.*, webhook.*); set it in one place" $name) }}
{{- end }}
{{- $_ := set $settings $name (include "twilio-kafka-bridge.envString" $value) }}
{{- end }}
{{- toJson $settings }}
{{- end }}

{{/* Combinations the schema cannot express; fails the render with a readable message. */}}
{{- define "twilio-kafka-bridge.validate" -}}
{{- $protocol := .Values.kafka.securityProtocol }}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled exclude each other: KEDA creates its own HorizontalPodAutoscaler" }}
{{- end }}
{{- if and .Values.kafka.sasl.existingSecret (not (hasPrefix "SASL_" $protocol)) }}
{{- fail "kafka.sasl.existingSecret needs kafka.securityProtocol SASL_PLAINTEXT or SASL_SSL" }}
{{- end }}
{{- if and .Values.kafka.tls.existingSecret (not (has $protocol (list "SSL" "SASL_SSL"))) }}
{{- fail "kafka.tls.existingSecret needs kafka.securityProtocol SSL or SASL_SSL" }}
{{- end }}
{{- if and .Values.kafka.tls.clientAuth (not .Values.kafka.tls.existingSecret) }}
{{- fail "kafka.tls.clientAuth needs kafka.tls.existingSecret (with tls.crt and tls.key)" }}
{{- end }}
{{- if and .Values.admin.enabled (not .Values.admin.existingSecret) }}
{{- fail "admin.enabled needs admin.existingSecret: a Secret with the API's bearer token and the encryption key (keys admin.secretKeys.token and .encryptionKey; see values.yaml). The values themselves are never accepted in values" }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if and (hasKey . "value") (hasPrefix "BRIDGE_ADMIN__" .name) (regexMatch (include "twilio-kafka-bridge.secretPattern" $) .name) }}
{{- fail (printf "extraEnv %s is a secret: give it with valueFrom (secretKeyRef) or admin.existingSecret, never as a literal value" .name) }}
{{- end }}
{{- end }}
{{- if .Values.ingress.enabled }}
{{- $settings := include "twilio-kafka-bridge.settings" . | fromJson }}
{{- if not (or (hasKey $settings "BRIDGE_WEBHOOK__PUBLIC_URL") (hasKey $settings "BRIDGE_WEBHOOK__TRUST_PROXY")) }}
{{- fail "ingress.enabled needs webhook.publicUrl, the URL Twilio calls (or config.BRIDGE_WEBHOOK__TRUST_PROXY): behind an Ingress no Twilio signature could be checked without it" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The base of the runbook links written in rules/alerts.yaml (the default of
prometheusRule.runbookBaseUrl). */}}
{{- define "twilio-kafka-bridge.runbookBase" -}}
https://github.com/twilio-kafka-bridge/twilio-kafka-bridge/blob/main/README.md
{{- end }}
