#!/bin/bash
# The official image's first-start sequence, shortened: what a client can observe is the same, in
# particular the temporary server that answers on the Unix socket only while init scripts run.
set -Eeo pipefail
if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi
if [ "$1" = 'postgres' ]; then
	if [ "$(id -u)" = '0' ]; then
		mkdir -p "$PGDATA" /var/run/postgresql
		chmod 00700 "$PGDATA" || :
		find "$PGDATA" \! -user postgres -exec chown postgres '{}' +
		chown postgres /var/run/postgresql && chmod 03775 /var/run/postgresql
		exec gosu postgres "$BASH_SOURCE" "$@"
	fi
	if [ ! -s "$PGDATA/PG_VERSION" ]; then
		if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != 'trust' ]; then
			echo >&2 'Error: Database is uninitialized and superuser password is not specified.'
			exit 1
		fi
		: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
		export POSTGRES_USER POSTGRES_DB
		initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") -D "$PGDATA" $POSTGRES_INITDB_ARGS
		printf '\nhost all all all %s\n' "${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >> "$PGDATA/pg_hba.conf"
		PGUSER="$POSTGRES_USER" pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
		if [ "$POSTGRES_DB" != 'postgres' ]; then
			psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --dbname postgres \
				--set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db" ;'
		fi
		for f in /docker-entrypoint-initdb.d/*; do
			case "$f" in
				*.sh) echo "running $f"; . "$f" ;;
				*.sql) echo "running $f"; psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -f "$f" ;;
			esac
		done
		PGUSER="$POSTGRES_USER" pg_ctl -D "$PGDATA" -m fast -w stop
		echo 'PostgreSQL init process complete; ready for start up.'
	fi
	set -- "$@" -c listen_addresses='*'
fi
exec "$@"
