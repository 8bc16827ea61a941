{{/*
podrole.image: "repository:tag" of an images.* entry.
*/}}
{{- define "podrole.image" -}}
{{ .repository }}:{{ .tag }}
{{- end }}

{{/*
podrole.port: the port of a listen address (":9443", "0.0.0.0:9443").
*/}}
{{- define "podrole.port" -}}
{{ regexFind "[0-9]+$" . }}
{{- end }}
