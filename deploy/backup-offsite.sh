#!/usr/bin/env bash
# Copies the backup volume to a Hetzner Storage Box (or any rsync-over-SSH host), keeping the
# same rotation there (rsync --delete mirrors what `cedar backup --rotate` kept).
# Cron on the host, after the 02:30 backup:  45 2 * * *  /opt/cedar/deploy/backup-offsite.sh
# Needs: STORAGE_BOX=u123456@u123456.your-storagebox.de and an SSH key authorised there.
set -euo pipefail
: "${STORAGE_BOX:?set STORAGE_BOX=user@host}"
volume=$(docker volume inspect --format '{{ .Mountpoint }}' cedar_backups)
rsync -az --delete -e "ssh -p 23 -o BatchMode=yes" "$volume/" "$STORAGE_BOX:cedar-backups/"
