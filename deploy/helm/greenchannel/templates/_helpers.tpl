{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "greenchannel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name. */}}
{{- define "greenchannel.fullname" -}}
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

{{- define "greenchannel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "greenchannel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "greenchannel.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "greenchannel.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: gateway
app.kubernetes.io/part-of: greenchannel
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "greenchannel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "greenchannel.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "greenchannel.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The gateway config file: .Values.config, plus the ops endpoint settings, plus a secret_file
(and TLS files) for every city in .Values.cityCredentials, plus Kafka TLS files.
*/}}
{{- define "greenchannel.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $obs := dict "host" (default "0.0.0.0" .Values.observability.host) "port" (int .Values.observability.port) "log_level" .Values.observability.logLevel "log_format" "json" -}}
{{- $_ := set $cfg "observability" $obs -}}
{{- $process := default (dict) (get $cfg "process") -}}
{{- $_ := set $process "members" (int .Values.processesPerPod) -}}
{{- $_ := set $cfg "process" $process -}}
{{- $cities := default (dict) (get $cfg "cities") -}}
{{- range $city, $cred := .Values.cityCredentials -}}
{{- $c := default (dict) (get $cities $city) -}}
{{- $credentials := default (dict) (get $c "credentials") -}}
{{- $_ := set $credentials "secret" nil -}}
{{- $_ := set $credentials "secret_file" (printf "/etc/greenchannel/credentials/%s/%s" $city (default "secret" $cred.secretKey)) -}}
{{- $_ := set $c "credentials" $credentials -}}
{{- if $cred.tlsSecretName -}}
{{- $dir := printf "/etc/greenchannel/tls/%s" $city -}}
{{- $_ := set $c "tls" (dict "ca_file" (printf "%s/ca.crt" $dir) "cert_file" (printf "%s/tls.crt" $dir) "key_file" (printf "%s/tls.key" $dir)) -}}
{{- end -}}
{{- $_ := set $cities $city $c -}}
{{- end -}}
{{- $_ := set $cfg "cities" $cities -}}
{{- if .Values.kafkaTls.existingSecret -}}
{{- $kafka := default (dict) (get $cfg "kafka") -}}
{{- $_ := set $kafka "ssl_cafile" "/etc/greenchannel/kafka-tls/ca.crt" -}}
{{- if .Values.kafkaTls.clientCertificate -}}
{{- $_ := set $kafka "ssl_certfile" "/etc/greenchannel/kafka-tls/tls.crt" -}}
{{- $_ := set $kafka "ssl_keyfile" "/etc/greenchannel/kafka-tls/tls.key" -}}
{{- end -}}
{{- $_ := set $cfg "kafka" $kafka -}}
{{- end -}}
{{- toYaml $cfg }}
{{- end }}

{{/* Fail early on settings the gateway could not honour. */}}
{{- define "greenchannel.validate" -}}
{{- $margin := ternary 7 5 (gt (int .Values.processesPerPod) 1) }}
{{- if le (int .Values.terminationGracePeriodSeconds) (add (int .Values.shutdownTimeoutSeconds) $margin | int) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed shutdownTimeoutSeconds + %v (%v)" .Values.terminationGracePeriodSeconds $margin (add .Values.shutdownTimeoutSeconds $margin)) }}
{{- end }}
{{- if and (gt (int .Values.processesPerPod) 1) (gt (mul (int .Values.replicaCount) (int .Values.processesPerPod) | int) 12) }}
{{- fail (printf "replicaCount x processesPerPod (%v) is over the 12 complaints partitions: members without partitions are never ready" (mul (int .Values.replicaCount) (int .Values.processesPerPod))) }}
{{- end }}
{{- if and (ne .Values.mode "run") (ne .Values.mode "deliver") .Values.deliverCities }}
{{- fail "deliverCities applies to mode run or deliver only" }}
{{- end }}
{{- end }}
