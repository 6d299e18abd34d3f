{{/*
Names, labels and the pieces every Trow container shares: args for the files the chart mounts,
the volumes and mounts themselves, probes. Each workload template assembles its own container
from these, so a flag or a mount path is written once.
*/}}

{{- define "trow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* release "trow" → "trow"; release "x" → "x-trow"; fullnameOverride wins. Cut at 44
     characters, so every name the chart derives stays a valid object name and label value (63):
     the longest suffix is "-webhook-certs-pre" (a Job, whose name is also its pods' job-name
     label), and a StatefulSet's name plus its 11-character revision hash is a pod label. */}}
{{- define "trow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 44 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 44 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 44 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "trow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "gateway"); objects shared by
     every component (ConfigMap, Secrets) leave "component" out. */}}
{{- define "trow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trow.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "trow.labels" -}}
helm.sh/chart: {{ include "trow.chart" .ctx }}
{{ include "trow.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{- define "trow.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* --- what is switched on ----------------------------------------------------------------- */}}

{{/* "true" when either admission webhook is registered. */}}
{{- define "trow.webhooksEnabled" -}}
{{- if or .Values.trow.validationWebhook.enabled .Values.trow.mutationWebhook.enabled }}true{{ end }}
{{- end }}

{{/* "true" when the registry has users (so clients log in). */}}
{{- define "trow.authEnabled" -}}
{{- if or .Values.trow.existingAuthSecret .Values.trow.user .Values.trow.htpasswd }}true{{ end }}
{{- end }}

{{/* The Secret holding user, password and htpasswd. */}}
{{- define "trow.authSecretName" -}}
{{- .Values.trow.existingAuthSecret | default (printf "%s-auth" (include "trow.fullname" .)) }}
{{- end }}

{{/* "true" when a proxied registry has a password (moved into the proxy-credentials Secret). */}}
{{- define "trow.hasProxyCredentials" -}}
{{- range (.Values.trow.proxyRegistries.config.registries | default list) }}{{ if .password }}true{{ end }}{{ end }}
{{- end }}

{{/* The Secret with the services' mTLS certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "trow.grpcTlsSecretName" -}}
{{- if .Values.grpcTls.certmanager.enabled }}{{ include "trow.fullname" . }}-grpc{{ else }}{{ .Values.grpcTls.existingSecret }}{{ end }}
{{- end }}

{{/* http:// or https:// for the services' gRPC URLs. */}}
{{- define "trow.grpcScheme" -}}
{{- if .Values.grpcTls.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{- define "trow.storageUrl" -}}
{{ include "trow.grpcScheme" . }}://{{ include "trow.fullname" . }}-storage:7000
{{- end }}
{{- define "trow.proxyUrl" -}}
{{ include "trow.grpcScheme" . }}://{{ include "trow.fullname" . }}-proxy:7001
{{- end }}
{{- define "trow.admissionUrl" -}}
{{ include "trow.grpcScheme" . }}://{{ include "trow.fullname" . }}-admission:7002
{{- end }}

{{/* --- args ------------------------------------------------------------------------------- */}}

{{/* A --bind/--listen address on every interface: (dict "ctx" $ "port" 8000). toYaml quotes
     it only when YAML needs that ("[::]:8000" would read as a list). */}}
{{- define "trow.listen" -}}
{{- printf "%s:%d" .ctx.Values.listenAddress (int .port) | toYaml }}
{{- end }}

{{/* Args every service process takes: the config file, trust between the services, metrics.
     A process that fetches from upstreams reads the config with the password files.
     (dict "ctx" $ "metricsPort" 9090 "proxyCredentials" true) */}}
{{- define "trow.commonArgs" -}}
{{- $ := .ctx -}}
- --config-file
{{- if and .proxyCredentials (include "trow.hasProxyCredentials" $) }}
- /etc/trow/config/config-proxy.yaml
{{- else }}
- /etc/trow/config/config.yaml
{{- end }}
{{- if $.Values.grpcTls.enabled }}
- --grpc-tls-cert
- /etc/trow/grpc/tls.crt
- --grpc-tls-key
- /etc/trow/grpc/tls.key
- --grpc-tls-ca
- /etc/trow/grpc/ca.crt
{{- end }}
{{- if $.Values.grpcToken.enabled }}
- --grpc-token-file
- /etc/trow/grpc-token/token
{{- end }}
{{- if $.Values.metrics.enabled }}
- --metrics-listen
- {{ printf "%s:%d" $.Values.listenAddress (int .metricsPort) | quote }}
{{- end }}
{{- end }}

{{/* Args of an HTTP gateway (split gateway, webhooks gateway, one process): hostname and users. */}}
{{- define "trow.gatewayArgs" -}}
- --hostname
- {{ .Values.trow.domain | quote }}
{{- if include "trow.authEnabled" . }}
{{- if not .Values.trow.existingAuthSecret }}
{{- if .Values.trow.user }}
- --user
- {{ .Values.trow.user | quote }}
- --password
- file:///etc/trow/auth/password
{{- end }}
{{- else }}
{{- /* The user name comes from the existing Secret, through TROW_USER (see trow.env). */}}
- --password
- file:///etc/trow/auth/password
{{- end }}
{{- if or .Values.trow.htpasswd (and .Values.trow.existingAuthSecret .Values.trow.existingAuthSecretHtpasswd) }}
- --htpasswd
- /etc/trow/auth/htpasswd
{{- end }}
{{- if .Values.trow.anonymousPull }}
- --anonymous-pull
{{- end }}
- --token-key-file
- /etc/trow/token-key/key
{{- end }}
{{- end }}

{{/* The user's extra args, global then the component's: (dict "ctx" $ "extra" .Values.gateway.extraArgs) */}}
{{- define "trow.extraArgs" -}}
{{- range .ctx.Values.trow.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- range .extra }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* --- env, mounts, volumes --------------------------------------------------------------- */}}

{{/* (dict "ctx" $ "gateway" true): gateways get the user name of an existing auth Secret. */}}
{{- define "trow.env" -}}
{{- $ := .ctx -}}
- name: RUST_LOG
  value: {{ $.Values.trow.logLevel | quote }}
{{- if and .gateway $.Values.trow.existingAuthSecret }}
- name: TROW_USER
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.trow.existingAuthSecret }}
      key: user
{{- end }}
{{- with $.Values.trow.additionalEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Mounts of a Trow service container; every Secret is a directory, never a subPath, so
     renewed certificates and rotated tokens reach the running process. Registry passwords
     only where upstreams are fetched from.
     (dict "ctx" $ "gateway" true "webhookTls" true "proxyCredentials" true) */}}
{{- define "trow.volumeMounts" -}}
{{- $ := .ctx -}}
- name: config
  mountPath: /etc/trow/config
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if and .proxyCredentials (include "trow.hasProxyCredentials" $) }}
- name: proxy-credentials
  mountPath: /etc/trow/proxy-credentials
  readOnly: true
{{- end }}
{{- if $.Values.grpcTls.enabled }}
- name: grpc-tls
  mountPath: /etc/trow/grpc
  readOnly: true
{{- end }}
{{- if $.Values.grpcToken.enabled }}
- name: grpc-token
  mountPath: /etc/trow/grpc-token
  readOnly: true
{{- end }}
{{- if and .gateway (include "trow.authEnabled" $) }}
- name: auth
  mountPath: /etc/trow/auth
  readOnly: true
- name: token-key
  mountPath: /etc/trow/token-key
  readOnly: true
{{- end }}
{{- if .webhookTls }}
- name: webhook-tls
  mountPath: /etc/trow/webhook-tls
  readOnly: true
{{- end }}
{{- with $.Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The volumes behind trow.volumeMounts:
     (dict "ctx" $ "gateway" true "webhookTls" true "proxyCredentials" true) */}}
{{- define "trow.volumes" -}}
{{- $ := .ctx -}}
{{- $full := include "trow.fullname" $ }}
- name: config
  configMap:
    name: {{ $full }}-config
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if and .proxyCredentials (include "trow.hasProxyCredentials" $) }}
- name: proxy-credentials
  secret:
    secretName: {{ $full }}-proxy-credentials
{{- end }}
{{- if $.Values.grpcTls.enabled }}
- name: grpc-tls
  secret:
    secretName: {{ include "trow.grpcTlsSecretName" $ }}
{{- end }}
{{- if $.Values.grpcToken.enabled }}
- name: grpc-token
  secret:
    secretName: {{ $.Values.grpcToken.existingSecret | default (printf "%s-grpc-token" $full) }}
{{- end }}
{{- if and .gateway (include "trow.authEnabled" $) }}
- name: auth
  secret:
    secretName: {{ include "trow.authSecretName" $ }}
- name: token-key
  secret:
    secretName: {{ $.Values.trow.existingTokenKeySecret | default (printf "%s-token-key" $full) }}
{{- end }}
{{- if .webhookTls }}
- name: webhook-tls
  secret:
    secretName: {{ $.Values.webhooks.tls.existingSecretRef | default (printf "%s-webhook-tls" $full) }}
{{- end }}
{{- with $.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* --- probes and pod bits ---------------------------------------------------------------- */}}

{{/* Readiness and liveness of a gRPC service: (dict "ctx" $ "port" 7000 "startup" true). The
     kubelet's gRPC probe sends no client certificate, so with mutual TLS only a TCP connect can
     be checked. "startup": a startup probe holds liveness off for up to 10 minutes, for the
     first start of a store on a large, slow volume (recovery and the catalog walk the tree). */}}
{{- define "trow.grpcProbes" -}}
{{- $check := dict }}
{{- if .ctx.Values.grpcTls.enabled }}
{{- $check = dict "tcpSocket" (dict "port" .port) }}
{{- else }}
{{- $check = dict "grpc" (dict "port" .port) }}
{{- end }}
{{- if .startup }}
startupProbe:
  {{- toYaml $check | nindent 2 }}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 60
{{- end }}
readinessProbe:
  {{- toYaml $check | nindent 2 }}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
livenessProbe:
  {{- toYaml $check | nindent 2 }}
  initialDelaySeconds: 10
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 6
{{- end }}

{{/* Readiness and liveness of an HTTP gateway: (dict "port" 8000 "scheme" "HTTP" "startup" true);
     "startup" as in trow.grpcProbes (the one process of mode single opens the store). */}}
{{/* The HTTP containers' preStop sleep (preStopSleepSeconds), so a terminating pod keeps
     serving while Services and load balancers stop sending it new connections. */}}
{{- define "trow.preStop" -}}
{{- if gt (int .Values.preStopSleepSeconds) 0 }}
lifecycle:
  preStop:
    sleep:
      seconds: {{ int .Values.preStopSleepSeconds }}
{{- end }}
{{- end }}

{{- define "trow.httpProbes" -}}
{{- if .startup }}
startupProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
    scheme: {{ .scheme }}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 60
{{- end }}
readinessProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
    scheme: {{ .scheme }}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
    scheme: {{ .scheme }}
  initialDelaySeconds: 10
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 6
{{- end }}

{{/* Pod-level settings every Trow pod shares:
     (dict "ctx" $ "values" .Values.gateway "component" "gateway" "api" true "spread" true).
     "api": the pod calls the Kubernetes API (a gateway reviewing tokens); every other pod runs
     without a service-account token, so a compromised proxy holds no credential for the API.
     "spread": a multi-replica Deployment; without the user's own affinity its pods prefer
     distinct nodes, so one node's drain or loss leaves a replica answering. */}}
{{- define "trow.podSpecCommon" -}}
{{- $ := .ctx -}}
serviceAccountName: {{ include "trow.fullname" $ }}
automountServiceAccountToken: {{ if and .api (eq (include "trow.kubernetesAuth" $) "true") }}true{{ else }}false{{ end }}
{{- with $.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $.Values.podSecurityContext | nindent 2 }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .values.affinity }}
affinity:
  {{- toYaml .values.affinity | nindent 2 }}
{{- else if .spread }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "trow.selectorLabels" (dict "ctx" $ "component" .component) | trim | nindent 14 }}
{{- end }}
{{- end }}

{{/* "true" when the gateway reviews Kubernetes tokens (authorization.kubernetes): its pods then
     carry their service-account token and the account may create TokenReviews. */}}
{{- define "trow.kubernetesAuth" -}}
{{- if and .Values.trow.authorization (hasKey .Values.trow.authorization "kubernetes") }}true{{ else }}false{{ end }}
{{- end }}

{{/* Users from values (the auth Secret), for the gateways' checksum. Empty without. */}}
{{- define "trow.authValues" -}}
{{- if and (include "trow.authEnabled" .) (not .Values.trow.existingAuthSecret) }}
{{- list .Values.trow.user .Values.trow.password .Values.trow.htpasswd | toJson }}
{{- end }}
{{- end }}

{{/* Registry passwords from values (the proxy-credentials Secret), for the checksum of the
     processes that fetch from upstreams. Empty without. */}}
{{- define "trow.proxyCredentialValues" -}}
{{- if include "trow.hasProxyCredentials" . }}
{{- range (.Values.trow.proxyRegistries.config.registries | default list) }}{{ .password | default "" | toString | toJson }}{{ end }}
{{- end }}
{{- end }}

{{/* Pod annotations of one component: checksums of what that component reads at start-up (a
     change rolls its pods, and only its pods) and scrape hints. (dict "ctx" $ "component" "storage")
     - storage reads only `retention` and `registry_proxies.max_size` (the cache's bound): a new
       user, password or policy must not restart the one pod that holds the volume;
     - gateways and the webhooks' gateway: the config and the users;
     - the proxy: its config (with password files) and the registry passwords;
     - admission: the config; single (one process): all of it.
     Generated and existing Secrets are not covered. */}}
{{- define "trow.podAnnotations" -}}
{{- $ := .ctx -}}
{{- $c := .component -}}
{{- $config := "" }}
{{- if eq $c "storage" }}
{{- $proxies := $.Values.trow.proxyRegistries.config | default dict }}
{{- $config = dict "retention" ($.Values.trow.retention | default dict) "max_size" (dig "max_size" "" $proxies) | toJson }}
{{- else if and (has $c (list "proxy" "single")) (include "trow.hasProxyCredentials" $) }}
{{- $config = include "trow.configYamlProxy" $ }}
{{- else }}
{{- $config = include "trow.configYaml" $ }}
{{- end }}
{{- if eq $c "single" }}
{{- $config = print $config "\n---\n" (include "trow.configYaml" $) }}
{{- end }}
checksum/config: {{ $config | sha256sum }}
{{- $secrets := "" }}
{{- if has $c (list "gateway" "webhooks" "single") }}
{{- $secrets = print $secrets (include "trow.authValues" $) }}
{{- end }}
{{- if has $c (list "proxy" "single") }}
{{- $secrets = print $secrets (include "trow.proxyCredentialValues" $) }}
{{- end }}
{{- with $secrets }}
checksum/secrets: {{ . | sha256sum }}
{{- end }}
{{- if $.Values.metrics.enabled }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ $.Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{- define "trow.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* The data volume's claim, from volumeClaim. */}}
{{- define "trow.volumeClaimSpec" -}}
accessModes:
  {{- toYaml .Values.volumeClaim.accessModes | nindent 2 }}
{{- with .Values.volumeClaim.storageClassName }}
storageClassName: {{ . | quote }}
{{- end }}
resources:
  {{- toYaml .Values.volumeClaim.resources | nindent 2 }}
{{- end }}

{{/* The webhooks' own HTTPS gateway container: the API server calls webhooks only over HTTPS,
     while the registry port stays plain for nodes and the ingress. It alone gets --admission
     (split mode): /validate-image and /mutate-image take no login, so the public gateway
     leaves them out (404). It serves the whole registry
     API on 8443 too, so it gets the same users as the main gateway.
     (dict "ctx" $ "name" "trow" "storage" URL "proxy" URL "admission" URL "metricsPort" 9090) */}}
{{- define "trow.webhooksContainer" -}}
{{- $ := .ctx -}}
- name: {{ .name }}
  image: {{ include "trow.image" $ | quote }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  args:
    - gateway
    - --bind
    - {{ include "trow.listen" (dict "ctx" $ "port" 8443) }}
    - --tls
    - /etc/trow/webhook-tls/tls.crt,/etc/trow/webhook-tls/tls.key
    - --storage
    - {{ .storage }}
    - --proxy
    - {{ .proxy }}
    - --admission
    - {{ .admission }}
    {{- include "trow.gatewayArgs" $ | trim | nindent 4 }}
    {{- include "trow.commonArgs" (dict "ctx" $ "metricsPort" .metricsPort) | trim | nindent 4 }}
    {{- with include "trow.extraArgs" (dict "ctx" $ "extra" $.Values.webhooks.extraArgs) }}{{ . | trim | nindent 4 }}{{ end }}
  env:
    {{- include "trow.env" (dict "ctx" $ "gateway" true) | trim | nindent 4 }}
  ports:
    - name: webhooks
      containerPort: 8443
    {{- if $.Values.metrics.enabled }}
    - name: {{ .metricsName }}
      containerPort: {{ .metricsPort }}
    {{- end }}
  {{- include "trow.httpProbes" (dict "port" "webhooks" "scheme" "HTTPS") | trim | nindent 2 }}
  {{- with include "trow.preStop" $ | trim }}
  {{- . | nindent 2 }}
  {{- end }}
  resources:
    {{- toYaml $.Values.webhooks.resources | nindent 4 }}
  securityContext:
    {{- include "trow.containerSecurityContext" $ | trim | nindent 4 }}
  volumeMounts:
    {{- include "trow.volumeMounts" (dict "ctx" $ "gateway" true "webhookTls" true) | trim | nindent 4 }}
{{- end }}
