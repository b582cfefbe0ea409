#!/bin/bash
# The official image's template step: each /etc/nginx/templates/NAME.template becomes
# /etc/nginx/conf.d/NAME with only the variables matching NGINX_ENVSUBST_FILTER replaced.
set -euo pipefail
filter="${NGINX_ENVSUBST_FILTER:-}"
names="$(env | cut -d= -f1 | grep -E "${filter:-.}" | sed 's/^/$/' | tr '\n' ' ' || true)"
for template in /etc/nginx/templates/*.template; do
    [ -e "$template" ] || continue
    name="$(basename "$template" .template)"
    envsubst "$names" < "$template" > "/etc/nginx/conf.d/$name"
done
exec "$@"
