{{/* The chart name, for labels. */}}
{{- define "sigil.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The resource name prefix. */}}
{{- define "sigil.fullname" -}}
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

{{- define "sigil.server.fullname" -}}
{{- printf "%s-server" (include "sigil.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sigil.agent.fullname" -}}
{{- printf "%s-agent" (include "sigil.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sigil.controllerManager.fullname" -}}
{{- printf "%s-controller-manager" (include "sigil.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sigil.bundleConfigMap" -}}
{{- default (printf "%s-bundle" (include "sigil.fullname" .)) .Values.bundleConfigMap.name }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "sigil.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "sigil.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "sigil.server.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sigil.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "sigil.agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sigil.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end }}

{{- define "sigil.server.image" -}}
{{- printf "%s:%s" .Values.server.image.repository (default .Chart.AppVersion .Values.server.image.tag) }}
{{- end }}

{{- define "sigil.controllerManager.image" -}}
{{- printf "%s:%s" .Values.controllerManager.image.repository (default .Chart.AppVersion .Values.controllerManager.image.tag) }}
{{- end }}

{{- define "sigil.agent.image" -}}
{{- printf "%s:%s" .Values.agent.image.repository (default .Chart.AppVersion .Values.agent.image.tag) }}
{{- end }}

{{/* The server's address, as agents reach it. */}}
{{- define "sigil.server.address" -}}
{{- printf "%s.%s.svc" (include "sigil.server.fullname" .) .Release.Namespace }}
{{- end }}

{{/* The Secret and key holding the PostgreSQL connection string. */}}
{{- define "sigil.server.dbSecretName" -}}
{{- default (printf "%s-datastore" (include "sigil.server.fullname" .)) .Values.server.dataStore.postgres.existingSecret }}
{{- end }}

{{- define "sigil.server.dbSecretKey" -}}
{{- if .Values.server.dataStore.postgres.existingSecret }}
{{- .Values.server.dataStore.postgres.existingSecretKey }}
{{- else -}}
connection-string
{{- end }}
{{- end }}

{{/* Paths inside the pods. */}}
{{- define "sigil.server.socketPath" -}}/tmp/spire-server/private/api.sock{{- end }}
{{- define "sigil.controllerManager.configPath" -}}/run/sigil/controller-manager/controller-manager.yaml{{- end }}
{{- define "sigil.agent.socketPath" -}}/run/sigil/sockets/{{ .Values.agent.socketName }}{{- end }}
{{- define "sigil.agent.psatTokenPath" -}}/var/run/secrets/tokens/spire-agent{{- end }}

{{/* Input checks, failing the render with a clear message. */}}
{{- define "sigil.validate" -}}
{{- if not (has .Values.server.dataStore.type (list "sqlite3" "postgres")) }}
{{- fail (printf "server.dataStore.type must be sqlite3 or postgres, not %q" .Values.server.dataStore.type) }}
{{- end }}
{{- if and (eq .Values.server.dataStore.type "postgres") (not .Values.server.dataStore.postgres.connectionString) (not .Values.server.dataStore.postgres.existingSecret) }}
{{- fail "server.dataStore.type=postgres needs server.dataStore.postgres.connectionString or server.dataStore.postgres.existingSecret" }}
{{- end }}
{{- if and (eq .Values.server.dataStore.type "sqlite3") (gt (int .Values.server.replicaCount) 1) }}
{{- fail "server.replicaCount > 1 needs server.dataStore.type=postgres: each replica would have its own SQLite database" }}
{{- end }}
{{- if and .Values.controllerManager.enabled (gt (int .Values.server.replicaCount) 1) }}
{{- fail "controllerManager.enabled needs server.replicaCount=1: sigil-controller-manager has no leader election yet, and one per replica would race" }}
{{- end }}
{{- if .Values.server.podCertificates.enabled }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/.+$" .Values.server.podCertificates.signerName) }}
{{- fail (printf "server.podCertificates.signerName must be <domain>/<path>, like spiffe.io/x509-svid, not %q" .Values.server.podCertificates.signerName) }}
{{- end }}
{{- end }}
{{- if not .Values.trustDomain }}
{{- fail "trustDomain is required" }}
{{- end }}
{{- if not .Values.clusterName }}
{{- fail "clusterName is required" }}
{{- end }}
{{- end }}
