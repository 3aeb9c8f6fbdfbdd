{{/*
The same-shaped block of every service (templates/<service>/*.yaml): Deployment, Service,
HorizontalPodAutoscaler and PodDisruptionBudget. Call each with
(dict "root" $ "component" "ranker" "target" "ranker" "values" .Values.ranker);
target "all" is the monolith (embedded store on a PersistentVolumeClaim, Recreate strategy);
target "gateway" is the HTTP gateway (no model, the http port on its Service instead of gRPC,
HTTP probes on /healthz and /readyz).
*/}}

{{/*
A service's Deployment: one `python -m services --target <target>` per pod.
*/}}
{{- define "teran.component.deployment" -}}
{{- $root := .root }}
{{- $v := .values }}
{{- $ctx := dict "root" $root "component" .component }}
{{- $monolith := eq .target "all" }}
{{- $gateway := eq .target "gateway" }}
{{- $http := include "teran.gateway.served" . }}
{{- $grpcPort := $root.Values.ports.grpc }}
{{- $security := $root.Values.security }}
{{- $secrets := include "teran.security.dir" $root }}
{{- $tls := include "teran.tls.enabled" $root }}
{{- /* TLS on: the kubelet's gRPC probes speak neither TLS nor keys, so they use ports.health. */}}
{{- $probePort := ternary $root.Values.ports.health $grpcPort (not (empty $tls)) }}
{{- $keysSecret := $security.apiKeys.existingSecret }}
{{- $serviceKey := and (eq .target "ranker") $security.serviceKey.existingSecret }}
{{- $clientCa := and (include "teran.tls.mutual" $root) (has .target (list "image_encoder" "text_encoder")) }}
{{- /* The gateway's probes are HTTP(S) GETs of its own routes (the kubelet checks no certificate). */}}
{{- $probe := dict "http" $gateway "port" $probePort "scheme" (ternary "HTTPS" "HTTP" (not (empty $tls))) -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "teran.componentName" $ctx }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "teran.labels" $ctx | nindent 4 }}
spec:
  {{- if not (dig "autoscaling" "enabled" false $v) }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  {{- if $monolith }}
  # The embedded store's volume is ReadWriteOnce and its write-ahead log single-writer: the old
  # pod must be gone before the new one opens it.
  strategy:
    type: Recreate
  {{- else }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  {{- end }}
  selector:
    matchLabels:
      {{- include "teran.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      labels:
        {{- include "teran.labels" $ctx | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      serviceAccountName: {{ include "teran.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automount }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ $root.Values.shutdown.terminationGracePeriodSeconds }}
      {{- $model := $root.Values.model }}
      {{- $standby := $root.Values.standbyModel }}
      {{- /* The gateway loads no model: no model volumes, no init containers. */}}
      {{- $withModel := not $gateway }}
      {{- $standby = ternary $standby (dict "enabled" false) $withModel }}
      {{- $standbyImage := and $standby.enabled (eq $standby.source "image") }}
      {{- if and $withModel (or (eq $model.source "image") $standbyImage) }}
      initContainers:
        {{- if eq $model.source "image" }}
        # The checkpoint (tokenizer, model version, weights) out of the model-repo image.
        {{- include "teran.modelInitContainer" (dict "root" $root "name" "model" "volume" "models" "model" $model) | nindent 8 }}
        {{- end }}
        {{- if $standbyImage }}
        # The standby model's checkpoint (standbyModel), mounted at /standby.
        {{- include "teran.modelInitContainer" (dict "root" $root "name" "standby-model" "volume" "standby" "model" $standby) | nindent 8 }}
        {{- end }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "teran.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            - --config
            - /etc/teran/config.yaml
            - --target
            - {{ .target }}
          env:
            - name: HF_HOME
              value: /cache/huggingface
            - name: XDG_CACHE_HOME
              value: /cache
            {{- if and (include "teran.qdrant.hasApiKey" $root) (has .target (list "image_encoder" "ranker")) }}
            # The store's key: from the Secret, never in the ConfigMap.
            - name: TERAN_COMMON__STORE__API_KEY
              valueFrom:
                secretKeyRef:
                  name: {{ include "teran.qdrant.secretName" $root }}
                  key: {{ $root.Values.qdrant.apiKey.existingSecretKey }}
            {{- end }}
            {{- if $serviceKey }}
            # The key the ranker sends to the encoders; only the ranker mounts it.
            - name: TERAN_SERVER__AUTH__SERVICE_KEY_FILE
              value: {{ printf "%s/service-key/%s" $secrets $security.serviceKey.existingSecretKey }}
            {{- end }}
            {{- if $clientCa }}
            # mTLS: the ranker and the upgrade Job must present a certificate ca.crt signed.
            - name: TERAN_SERVER__TLS__CLIENT_CA_FILE
              value: {{ printf "%s/tls/ca.crt" $secrets }}
            {{- end }}
            {{- with $root.Values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            {{- if not $gateway }}
            - name: grpc
              containerPort: {{ $grpcPort }}
              protocol: TCP
            {{- end }}
            - name: metrics
              containerPort: {{ $root.Values.ports.metrics }}
              protocol: TCP
            {{- if and $tls (not $gateway) }}
            - name: health
              containerPort: {{ $root.Values.ports.health }}
              protocol: TCP
            {{- end }}
            {{- if $http }}
            # The HTTP/JSON API and the search page (config gateway.port).
            - name: http
              containerPort: {{ $root.Values.ports.http }}
              protocol: TCP
            {{- end }}
          {{- with $v.probes.startup }}
          {{- if .enabled }}
          # Loading the model takes a while: liveness and readiness wait for the first success.
          startupProbe:
            {{- include "teran.probeCheck" (merge (dict "path" "/healthz") $probe) | nindent 12 }}
            {{- include "teran.probeTimings" . | nindent 12 }}
          {{- end }}
          {{- end }}
          {{- with $v.probes.readiness }}
          {{- if .enabled }}
          readinessProbe:
            {{- /* the gateway's /readyz: its upstream answers SERVING */}}
            {{- include "teran.probeCheck" (merge (dict "path" "/readyz") $probe) | nindent 12 }}
            {{- include "teran.probeTimings" . | nindent 12 }}
          {{- end }}
          {{- end }}
          {{- with $v.probes.liveness }}
          {{- if .enabled }}
          livenessProbe:
            # "liveness" (the gateway's /healthz) stays SERVING while the process runs: a Triton,
            # Qdrant or ranker outage turns readiness off, it must not restart healthy pods
            {{- include "teran.probeCheck" (merge (dict "path" "/healthz" "service" "liveness") $probe) | nindent 12 }}
            {{- include "teran.probeTimings" . | nindent 12 }}
          {{- end }}
          {{- end }}
          lifecycle:
            preStop:
              # Endpoint removal reaches kube-proxy and the peers' resolvers only after a moment;
              # sleeping first keeps this pod answering until traffic has moved away, then SIGTERM
              # starts the server's graceful drain (config.server.shutdown_grace_s).
              exec:
                command: ["sleep", "{{ $root.Values.shutdown.preStopSleepSeconds }}"]
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: config
              mountPath: /etc/teran
              readOnly: true
            {{- if $withModel }}
            - name: models
              mountPath: /models
              readOnly: true
            {{- end }}
            {{- if $standby.enabled }}
            - name: standby
              mountPath: /standby
              readOnly: true
            {{- end }}
            - name: tmp
              mountPath: /tmp
            - name: cache
              mountPath: /cache
            {{- if $monolith }}
            - name: store
              mountPath: /data
            {{- end }}
            {{- if $keysSecret }}
            - name: api-keys
              mountPath: {{ $secrets }}/keys
              readOnly: true
            {{- end }}
            {{- if $tls }}
            - name: tls
              mountPath: {{ $secrets }}/tls
              readOnly: true
            {{- end }}
            {{- if $serviceKey }}
            - name: service-key
              mountPath: {{ $secrets }}/service-key
              readOnly: true
            {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with (dig "topologySpreadConstraints" list $v) }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ include "teran.fullname" $root }}
        {{- if $withModel }}
        {{- include "teran.modelVolume" (dict "volume" "models" "model" $model) | nindent 8 }}
        {{- end }}
        {{- if $standby.enabled }}
        {{- include "teran.modelVolume" (dict "volume" "standby" "model" $standby) | nindent 8 }}
        {{- end }}
        # The root filesystem is read-only: scratch space and library caches live here.
        - name: tmp
          emptyDir: {}
        - name: cache
          emptyDir: {}
        {{- if $monolith }}
        - name: store
          persistentVolumeClaim:
            claimName: {{ $v.persistence.existingClaim | default (include "teran.componentName" (dict "root" $root "component" "store")) }}
        {{- end }}
        {{- if $keysSecret }}
        # The keys file (hashes and roles); the servers re-read it when the Secret changes.
        {{- include "teran.security.volume" (dict "volume" "api-keys" "secret" $keysSecret "items" (list $security.apiKeys.existingSecretKey)) | nindent 8 }}
        {{- end }}
        {{- if $tls }}
        # tls.crt, tls.key, and ca.crt to trust the peers (not the monolith's: it has none, unless
        # its gateway calls it through its Service); the servers re-read them when cert-manager
        # renews the Secret.
        {{- $files := ternary (list "tls.crt" "tls.key") (list "tls.crt" "tls.key" "ca.crt") (and $monolith (not $http)) }}
        {{- include "teran.security.volume" (dict "volume" "tls" "secret" (include "teran.tls.secretName" $root) "items" $files) | nindent 8 }}
        {{- end }}
        {{- if $serviceKey }}
        {{- include "teran.security.volume" (dict "volume" "service-key" "secret" $serviceKey "items" (list $security.serviceKey.existingSecretKey)) | nindent 8 }}
        {{- end }}
{{- end }}

{{/*
A service's Service: the gRPC port (the gateway's: the http port instead; the monolith's: both
with gateway.enabled) and the metrics port (scraped by the ServiceMonitor).
*/}}
{{- define "teran.component.service" -}}
{{- $root := .root }}
{{- $tls := include "teran.tls.enabled" $root }}
{{- $ctx := dict "root" $root "component" .component -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "teran.componentName" $ctx }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "teran.labels" $ctx | nindent 4 }}
  {{- with .values.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ .values.service.type }}
  ports:
    {{- if ne .target "gateway" }}
    - name: grpc
      port: {{ .values.service.port }}
      targetPort: grpc
      protocol: TCP
      {{- if not $tls }}
      {{- /* HTTP/2 in cleartext; with TLS there is no standard name, so none is claimed. */}}
      appProtocol: kubernetes.io/h2c
      {{- end }}
    {{- end }}
    {{- if include "teran.gateway.served" . }}
    - name: http
      port: {{ $root.Values.gateway.service.port }}
      targetPort: http
      protocol: TCP
      appProtocol: {{ ternary "https" "http" (not (empty $tls)) }}
    {{- end }}
    - name: metrics
      port: {{ $root.Values.ports.metrics }}
      targetPort: metrics
      protocol: TCP
      appProtocol: http
  selector:
    {{- include "teran.selectorLabels" $ctx | nindent 4 }}
{{- end }}

{{/*
A service's HorizontalPodAutoscaler (autoscaling.enabled): CPU and/or memory utilization.
*/}}
{{- define "teran.component.hpa" -}}
{{- $root := .root }}
{{- $ctx := dict "root" $root "component" .component }}
{{- with .values.autoscaling }}
{{- if .enabled -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "teran.componentName" $ctx }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "teran.labels" $ctx | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "teran.componentName" $ctx }}
  minReplicas: {{ .minReplicas }}
  maxReplicas: {{ .maxReplicas }}
  metrics:
    {{- if .targetCPUUtilizationPercentage }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .targetCPUUtilizationPercentage }}
    {{- end }}
    {{- if .targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ .targetMemoryUtilizationPercentage }}
    {{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A service's PodDisruptionBudget (podDisruptionBudget.enabled): minAvailable when given, else
maxUnavailable.
*/}}
{{- define "teran.component.pdb" -}}
{{- $root := .root }}
{{- $ctx := dict "root" $root "component" .component }}
{{- with .values.podDisruptionBudget }}
{{- if .enabled -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "teran.componentName" $ctx }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "teran.labels" $ctx | nindent 4 }}
spec:
  {{- if hasKey . "minAvailable" }}
  minAvailable: {{ .minAvailable }}
  {{- else }}
  maxUnavailable: {{ dig "maxUnavailable" 1 . }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "teran.selectorLabels" $ctx | nindent 6 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A probe's check: grpc.health.v1 on `port` (the `service` when given), or for the gateway
(`http`) a GET of `path` on its http port with `scheme`.
Call with (dict "http" false "port" 50051 "scheme" "HTTP" "path" "/healthz" "service" "").
*/}}
{{- define "teran.probeCheck" -}}
{{- if .http -}}
httpGet:
  path: {{ .path }}
  port: http
  scheme: {{ .scheme }}
{{- else -}}
grpc:
  port: {{ .port }}
  {{- with .service }}
  service: {{ . }}
  {{- end }}
{{- end }}
{{- end }}
