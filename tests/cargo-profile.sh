# Sourced by the scripts that build with cargo: reads PROFILE (release, the
# default, or dev) and sets DIR, the directory cargo puts that profile's
# binaries in (dev's is "debug").
PROFILE=${PROFILE:-release}
case "$PROFILE" in
  release) DIR=release ;;
  dev) DIR=debug ;;
  *) echo "PROFILE must be release or dev, not $PROFILE" >&2; exit 2 ;;
esac
export PROFILE
