#!/bin/sh
# The official image's entrypoint contract: flags alone mean redis-server; root drops to the redis user.
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi
if [ "$1" = 'redis-server' ] && [ "$(id -u)" = '0' ]; then
	find . \! -user redis -exec chown redis '{}' +
	exec gosu redis "$0" "$@"
fi
if [ "$1" = 'redis-server' ]; then
	# The official build defaults protected mode to no; Debian's binary defaults it to yes.
	shift
	set -- redis-server --protected-mode no "$@"
fi
umask 0077
exec "$@"
