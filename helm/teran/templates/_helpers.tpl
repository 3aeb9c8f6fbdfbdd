{{/*
Expand the name of the chart.
*/}}
{{- define "teran.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "teran.fullname" -}}
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
Create chart name and version as used by the chart label.
*/}}
{{- define "teran.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of one component's resources: <fullname>-<component>, e.g. teran-ranker.
Call with (dict "root" $ "component" "ranker").
*/}}
{{- define "teran.componentName" -}}
{{- printf "%s-%s" (include "teran.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A component's in-cluster gRPC address, <fullname>-<component>:<port>.
Call with (dict "root" $ "component" "ranker" "port" .Values.ranker.service.port).
*/}}
{{- define "teran.serviceAddress" -}}
{{- printf "%s:%v" (include "teran.componentName" .) .port }}
{{- end }}

{{/*
Selector labels; app.kubernetes.io/component when the component is not empty.
Call with (dict "root" $ "component" "ranker").
*/}}
{{- define "teran.selectorLabels" -}}
app.kubernetes.io/name: {{ include "teran.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/*
Common labels: the selector labels plus chart, version and manager.
Call with (dict "root" $ "component" "ranker"); component "" for release-wide objects.
*/}}
{{- define "teran.labels" -}}
helm.sh/chart: {{ include "teran.chart" .root }}
{{ include "teran.selectorLabels" . }}
{{- if .root.Chart.AppVersion }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: teran
{{- end }}

{{/*
Create the name of the service account to use.
*/}}
{{- define "teran.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "teran.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The services' image; the tag defaults to the chart appVersion.
*/}}
{{- define "teran.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
A model-repo image (deploy/Dockerfile.model-repo); the tag defaults to the chart appVersion.
Call with (dict "root" $ "model" .Values.model) or .Values.standbyModel.
*/}}
{{- define "teran.modelImage" -}}
{{- printf "%s:%s" .model.image.repository (.model.image.tag | default .root.Chart.AppVersion) }}
{{- end }}

{{/*
The init container that copies a model out of its model-repo image (source: image) into the
volume `volume`. The image's ENTRYPOINT copies /model into /models, so the volume is mounted at
/models here whatever the main containers mount it at (/models, or /standby for the standby).
Call with (dict "root" $ "name" "model" "volume" "models" "model" .Values.model).
*/}}
{{- define "teran.modelInitContainer" -}}
- name: {{ .name }}
  image: {{ include "teran.modelImage" . }}
  imagePullPolicy: {{ .model.image.pullPolicy }}
  command: ["cp", "-R", "/model/.", "/models/"]
  securityContext:
    {{- toYaml .root.Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: {{ .volume }}
      mountPath: /models
{{- end }}

{{/*
A model's volume: an emptyDir the init container fills (source: image), else the existing claim,
read-only. Call with (dict "volume" "models" "model" .Values.model).
*/}}
{{- define "teran.modelVolume" -}}
- name: {{ .volume }}
  {{- if eq .model.source "image" }}
  emptyDir:
    sizeLimit: {{ .model.sizeLimit }}
  {{- else }}
  persistentVolumeClaim:
    claimName: {{ .model.existingClaim }}
    readOnly: true
  {{- end }}
{{- end }}

{{/*
The Qdrant URL the services reach: the external one, else the built-in StatefulSet's Service.
*/}}
{{- define "teran.qdrant.url" -}}
{{- if .Values.qdrant.external.url }}
{{- .Values.qdrant.external.url }}
{{- else }}
{{- printf "http://%s:%v" (include "teran.componentName" (dict "root" . "component" "qdrant")) .Values.qdrant.service.ports.http }}
{{- end }}
{{- end }}

{{/*
The built-in Qdrant's headless Service: the StatefulSet's governing Service, whose per-pod DNS
names the cluster's peers reach each other by.
*/}}
{{- define "teran.qdrant.headlessName" -}}
{{- printf "%s-headless" (include "teran.componentName" (dict "root" . "component" "qdrant")) }}
{{- end }}

{{/*
A built-in Qdrant node's p2p URI, http://<pod>.<headless>.<namespace>.svc.<clusterDomain>:<p2p>.
Call with (dict "root" $ "pod" "teran-qdrant-0"); the pod may be a shell expansion.
*/}}
{{- define "teran.qdrant.peerUri" -}}
{{- $q := .root.Values.qdrant }}
{{- printf "http://%s.%s.%s.svc.%s:%v" .pod (include "teran.qdrant.headlessName" .root) .root.Release.Namespace $q.cluster.clusterDomain $q.service.ports.p2p }}
{{- end }}

{{/*
The Secret holding the Qdrant API key: an existing one, else the chart's.
*/}}
{{- define "teran.qdrant.secretName" -}}
{{- default (printf "%s-qdrant-api-key" (include "teran.fullname" .)) .Values.qdrant.apiKey.existingSecret }}
{{- end }}

{{/*
"true" when the services send a Qdrant API key: always for the built-in Qdrant (a generated key
when none is given), for an external one when a key or a Secret is given.
*/}}
{{- define "teran.qdrant.hasApiKey" -}}
{{- if and (eq .Values.mode "microservices") (or .Values.qdrant.enabled .Values.qdrant.apiKey.existingSecret .Values.qdrant.apiKey.value) }}
{{- true }}
{{- end }}
{{- end }}

{{/*
Where the security Secrets are mounted (read-only folders, never subPath: a subPath mount does
not follow the Secret's updates): <dir>/keys, <dir>/tls, <dir>/service-key, <dir>/admin-key.
*/}}
{{- define "teran.security.dir" -}}
/var/run/secrets/teran
{{- end }}

{{/*
"true" when the services serve TLS: an existing Secret or a cert-manager Certificate.
*/}}
{{- define "teran.tls.enabled" -}}
{{- with .Values.security.tls }}
{{- if or .existingSecret .certManager.enabled }}
{{- true }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The kubernetes.io/tls Secret the services mount: the existing one, else the Certificate's.
*/}}
{{- define "teran.tls.secretName" -}}
{{- default (printf "%s-tls" (include "teran.fullname" .)) .Values.security.tls.existingSecret }}
{{- end }}

{{/*
"true" with mTLS between the services (security.tls.mutual, microservices only).
*/}}
{{- define "teran.tls.mutual" -}}
{{- if and (include "teran.tls.enabled" .) .Values.security.tls.mutual (eq .Values.mode "microservices") }}
{{- true }}
{{- end }}
{{- end }}

{{/*
The components whose Services the certificate must name: the public one and every service the
ranker, the test Pod or the upgrade Job dials.
*/}}
{{- define "teran.tls.components" -}}
{{- if eq .Values.mode "monolith" }}
{{- list "monolith" | toJson }}
{{- else if .Values.gateway.enabled }}
{{- /* the gateway serves HTTPS with the same certificate */}}
{{- list "ranker" "image-encoder" "text-encoder" "gateway" | toJson }}
{{- else }}
{{- list "ranker" "image-encoder" "text-encoder" | toJson }}
{{- end }}
{{- end }}

{{/*
"true" when the pods of `target` serve the HTTP gateway on ports.http: the gateway's own
(`--target gateway`), and the monolith's (`--target all` hosts it) with gateway.enabled.
Call with (dict "root" $ "target" "gateway").
*/}}
{{- define "teran.gateway.served" -}}
{{- if or (eq .target "gateway") (and (eq .target "all") .root.Values.gateway.enabled) }}
{{- true }}
{{- end }}
{{- end }}

{{/*
A Secret volume for one security Secret, read-only files for the pods' group (fsGroup).
Call with (dict "volume" "keys" "secret" "teran-api-keys"), "items" optional (a list of keys).
*/}}
{{- define "teran.security.volume" -}}
- name: {{ .volume }}
  secret:
    secretName: {{ .secret }}
    defaultMode: 0440
    {{- with .items }}
    items:
      {{- range . }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
    {{- end }}
{{- end }}

{{/*
The services' YAML configuration (services/config.py): the chart's topology (listen address,
ports, model paths, inference backend, store, peers, the gateway's upstreams) and security (key and certificate paths,
never their contents) merged with .Values.config.
*/}}
{{- define "teran.config" -}}
{{- $monolith := eq .Values.mode "monolith" }}
{{- $server := dict "host" "0.0.0.0" "grpc_port" .Values.ports.grpc "metrics_port" .Values.ports.metrics }}
{{- $model := dict "checkpoint" (printf "/models/%s" .Values.model.checkpointDir) }}
{{- $standby := dict "checkpoint" (printf "/standby/%s" .Values.standbyModel.checkpointDir) }}
{{- $inference := dict "backend" "inprocess" }}
{{- if and (not $monolith) .Values.triton.enabled }}
{{- $triton := include "teran.componentName" (dict "root" . "component" "triton") }}
{{- $_ := set $inference "backend" "triton" }}
{{- $_ := set $inference "triton_url" (printf "%s:%v" $triton .Values.triton.service.ports.grpc) }}
{{- $_ := set $model "repository" (printf "/models/%s" .Values.model.repositoryDir) }}
{{- $_ := set $standby "repository" (printf "/standby/%s" .Values.standbyModel.repositoryDir) }}
{{- end }}
{{- $store := dict "kind" "edge" "path" "/data/store" }}
{{- if not $monolith }}
{{- with .Values.qdrant.collections }}
{{- $store = dict "kind" "qdrant" "url" (include "teran.qdrant.url" $) "shard_number" .shardNumber "replication_factor" .replicationFactor "write_consistency_factor" .writeConsistencyFactor }}
{{- end }}
{{- end }}
{{- $ranker := dict }}
{{- if not $monolith }}
{{- $_ := set $ranker "text_encoder_url" (include "teran.serviceAddress" (dict "root" . "component" "text-encoder" "port" .Values.textEncoder.service.port)) }}
{{- $_ := set $ranker "image_encoder_url" (include "teran.serviceAddress" (dict "root" . "component" "image-encoder" "port" .Values.imageEncoder.service.port)) }}
{{- end }}
{{- $gateway := dict }}
{{- if .Values.gateway.enabled }}
{{- /* The gateway Deployment calls the ranker and the image encoder through their Services,
with each caller's own API key; the monolith's gateway calls the monolith's own gRPC port. */}}
{{- $gateway = dict "host" "0.0.0.0" "port" .Values.ports.http }}
{{- if not $monolith }}
{{- $_ := set $gateway "upstream" (include "teran.serviceAddress" (dict "root" . "component" "ranker" "port" .Values.ranker.service.port)) }}
{{- $_ := set $gateway "image_upstream" (include "teran.serviceAddress" (dict "root" . "component" "image-encoder" "port" .Values.imageEncoder.service.port)) }}
{{- end }}
{{- end }}
{{- $secrets := include "teran.security.dir" . }}
{{- $auth := dict "allow_insecure" .Values.security.allowInsecure "reflection" .Values.security.reflection }}
{{- with .Values.security.apiKeys }}
{{- if .existingSecret }}
{{- $_ := set $auth "keys_file" (printf "%s/keys/%s" $secrets .existingSecretKey) }}
{{- end }}
{{- end }}
{{- $_ := set $server "auth" $auth }}
{{- if include "teran.tls.enabled" . }}
{{- $tls := dict "cert_file" (printf "%s/tls/tls.crt" $secrets) "key_file" (printf "%s/tls/tls.key" $secrets) }}
{{- if or (not $monolith) .Values.gateway.enabled }}
{{- /* The ranker and the gateway dial their peers over TLS, presenting this certificate (mTLS
when they ask). The monolith's only peer is its own gateway's upstream: its gRPC port through
its Service, the name the certificate carries (not 0.0.0.0, the address it listens on). */}}
{{- $_ := set $tls "peer_ca_file" (printf "%s/tls/ca.crt" $secrets) }}
{{- end }}
{{- if .Values.gateway.enabled }}
{{- /* HTTPS with the release's certificate. */}}
{{- $_ := set $gateway "tls_cert_file" $tls.cert_file }}
{{- $_ := set $gateway "tls_key_file" $tls.key_file }}
{{- if $monolith }}
{{- $_ := set $gateway "upstream" (include "teran.serviceAddress" (dict "root" . "component" "monolith" "port" .Values.monolith.service.port)) }}
{{- end }}
{{- end }}
{{- $_ := set $server "tls" $tls }}
{{- $_ := set $server "health_port" .Values.ports.health }}
{{- end }}
{{- $user := .Values.config }}
{{- $common := dict "model" $model "inference" (merge $inference (dig "inference" dict $user)) "store" $store }}
{{- /* Only when configured: a default render stays loadable by services without the key. */}}
{{- if .Values.standbyModel.enabled }}
{{- $_ := set $common "standby_models" (list $standby) }}
{{- end }}
{{- $config := dict
  "server" (merge $server (dig "server" dict $user))
  "common" $common
  "image_encoder" (dig "image_encoder" dict $user)
  "text_encoder" (dig "text_encoder" dict $user)
  "ranker" (merge $ranker (dig "ranker" dict $user))
  "gateway" (merge $gateway (dig "gateway" dict $user))
}}
{{- toYaml $config }}
{{- end }}

{{/*
A probe's timings: its values without `enabled`.
*/}}
{{- define "teran.probeTimings" -}}
{{- toYaml (omit . "enabled") }}
{{- end }}

{{/*
The upgrade Job's name: Jobs are immutable, so each helm revision runs its own,
<fullname>-upgrade-<revision> (the fullname shortened so the revision always fits in 63).
*/}}
{{- define "teran.upgrade.jobName" -}}
{{- $suffix := printf "-upgrade-%v" .Release.Revision }}
{{- printf "%s%s" (include "teran.fullname" . | trunc (int (sub 63 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}
