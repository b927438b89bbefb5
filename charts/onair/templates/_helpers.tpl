{{/* Names, labels and the image reference shared by every template. */}}

{{- define "onair.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "onair.fullname" -}}
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

{{- define "onair.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "onair.selectorLabels" -}}
app.kubernetes.io/name: {{ include "onair.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "onair.labels" -}}
helm.sh/chart: {{ include "onair.chart" . }}
{{ include "onair.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: onair
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of one component: (dict "root" $ "component" "operator") */}}
{{- define "onair.componentLabels" -}}
{{ include "onair.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "onair.componentSelector" -}}
{{ include "onair.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "onair.image" -}}
{{- $repo := .Values.image.repository -}}
{{- if .Values.image.registry -}}{{- $repo = printf "%s/%s" .Values.image.registry $repo -}}{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "onair.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (printf "%s-operator" (include "onair.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- /* The operator's rules would go to every Pod of the namespace that runs as "default". */ -}}
{{- required "operator.serviceAccount.name: the ServiceAccount to bind the operator's rules to (serviceAccount.create is false)" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "onair.gateway.serviceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create -}}
{{- default (printf "%s-gateway" (include "onair.fullname" .)) .Values.gateway.serviceAccount.name -}}
{{- else -}}
{{- /* The gateway's rules would go to every Pod of the namespace that runs as "default". */ -}}
{{- required "gateway.serviceAccount.name: the ServiceAccount to bind the gateway's rules to (serviceAccount.create is false)" .Values.gateway.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the operator watches: the listed ones plus the release namespace; empty list = all. */}}
{{- define "onair.watchNamespaces" -}}
{{- if .Values.operator.watchNamespaces -}}
{{- toJson (uniq (append .Values.operator.watchNamespaces .Release.Namespace)) -}}
{{- else -}}
[]
{{- end -}}
{{- end -}}

{{/* The watched namespaces when every one is a name (RBAC is then granted in those alone); [] when
    all namespaces or any pattern (t-*, or kopf's comma-joined parts) is watched, whose namespaces are
    not known when the chart is rendered. */}}
{{- define "onair.namedWatchNamespaces" -}}
{{- $watch := fromJsonArray (include "onair.watchNamespaces" .) -}}
{{- $patterns := false -}}
{{- range $ns := $watch }}{{ if regexMatch "[*?!,\\[]" $ns }}{{ $patterns = true }}{{ end }}{{ end }}
{{- if $patterns -}}
[]
{{- else -}}
{{- toJson $watch -}}
{{- end -}}
{{- end -}}

{{- define "onair.webhookSecretName" -}}
{{- default (printf "%s-webhooks" (include "onair.fullname" .)) .Values.webhooks.existingSecret -}}
{{- end -}}

{{- define "onair.streamKeySecretName" -}}
{{- default (printf "%s-stream-keys" (include "onair.fullname" .)) .Values.streamKeys.existingSecret -}}
{{- end -}}

{{- define "onair.gatewaySecretName" -}}
{{- printf "%s-gateway" (include "onair.fullname" .) -}}
{{- end -}}

{{/* The Secret holding the gateway's JWT signing key: the user's, or the chart's own. */}}
{{- define "onair.gatewayJwtSecretName" -}}
{{- default (include "onair.gatewaySecretName" .) .Values.gateway.jwtSecret.existingSecret -}}
{{- end -}}

{{/* The Secret the gateway reads its API keys from: the user's, or the chart's own. */}}
{{- define "onair.gatewayApiKeysSecretName" -}}
{{- default (include "onair.gatewaySecretName" .) .Values.gateway.apiKeys.existingSecret -}}
{{- end -}}

{{/* A random key that survives upgrades: the existing Secret's value when there is one.
     (dict "root" $ "name" secretName "key" dataKey) */}}
{{- define "onair.persistentRandom" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- randAlphaNum 48 | b64enc -}}
{{- end -}}
{{- end -}}
