#!/usr/bin/env bash
# Install Albra on an EC2 instance (any systemd Linux): the `albra` system user, /opt/albra/bin,
# /etc/albra (config + env file, never overwritten once there), /var/lib/albra (state), and ONE
# of the two ways to run the jobs:
#   --mode systemd  the long-running scheduler `albra run --live` (infra/ec2/albra.service),
#                   and the 30-minute status report from albra-status-report.timer
#   --mode cron     the one-shot binaries from /etc/cron.d/albra (infra/ec2/albra.cron, the
#                   status report included)
# and, in both modes, albra-watch.timer: every 5 minutes `albra-job check` alerts through the
# notifier when a job has stopped succeeding (heartbeat files in /var/lib/albra/jobs).
# Installing one mode removes the other, so switching is just re-running with the other flag.
# Idempotent: re-running replaces the binaries and the unit/crontab and changes nothing else.
#
#   cargo build --release --bins && sudo infra/ec2/install.sh --mode systemd
#
# --root DIR installs into DIR instead of / and skips everything that needs a real system
# (user creation, chown, systemctl): for packaging and for the tests.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
mode=""
bin_dir="${CARGO_TARGET_DIR:-$repo/target}/release"
config="$repo/config/albra.toml"
root=""

usage() {
  sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  echo
  echo "usage: install.sh --mode systemd|cron [--bin-dir DIR] [--config FILE] [--root DIR]"
}
die() { echo "install.sh: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --mode) mode="${2:-}"; shift 2 ;;
    --bin-dir) bin_dir="${2:-}"; shift 2 ;;
    --config) config="${2:-}"; shift 2 ;;
    --root) root="${2:-}"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
done
[[ "$mode" == systemd || "$mode" == cron ]] || { usage >&2; die "--mode must be systemd or cron"; }
for b in albra albra-ops evaluator position-sync; do
  [[ -x "$bin_dir/$b" ]] || die "$bin_dir/$b is missing: build first (cargo build --release --bins) or pass --bin-dir"
done
[[ -r "$config" ]] || die "config $config is not readable (pass --config FILE)"

system=1
if [[ -n "$root" ]]; then
  system=0
  mkdir -p "$root"
  root="$(cd "$root" && pwd)"
elif [[ "$(id -u)" != 0 ]]; then
  die "run as root (sudo), or pass --root DIR to stage the files"
fi

prefix="$root/opt/albra"
etc="$root/etc/albra"
var="$root/var/lib/albra"
unit="$root/etc/systemd/system/albra.service"
watch_service="$root/etc/systemd/system/albra-watch.service"
watch_timer="$root/etc/systemd/system/albra-watch.timer"
report_service="$root/etc/systemd/system/albra-status-report.service"
report_timer="$root/etc/systemd/system/albra-status-report.timer"
cronfile="$root/etc/cron.d/albra"

if [[ $system == 1 ]] && ! id albra >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/albra --no-create-home --shell /usr/sbin/nologin albra
  echo "created user albra"
fi

install -d -m 0755 "$prefix/bin"
for b in albra albra-ops evaluator position-sync; do
  install -m 0755 "$bin_dir/$b" "$prefix/bin/$b"
done
install -m 0755 "$here/albra-job" "$prefix/bin/albra-job"
install -d -m 0750 "$etc" "$var"
# The operator's config and keys are never overwritten by a re-install.
[[ -e "$etc/albra.toml" ]] || install -m 0640 "$config" "$etc/albra.toml"
[[ -e "$etc/albra.env" ]] || install -m 0600 "$here/albra.env.example" "$etc/albra.env"
if [[ $system == 1 ]]; then
  chown -R albra:albra "$var"
  chown root:albra "$etc" "$etc/albra.toml"
  # The jobs run as albra and read their keys file themselves (0600, so albra must own it).
  chown albra:albra "$etc/albra.env"
fi

# Live trading starts only once `albra validate` passes: the config, each account's live opt-in
# and one signed read-only call per account with the keys in albra.env.
validate() {
  runuser -u albra -- "$prefix/bin/albra" --config "$etc/albra.toml" --env-file "$etc/albra.env" validate
}

case "$mode" in
  systemd)
    rm -f "$cronfile"
    install -d -m 0755 "$(dirname "$unit")"
    install -m 0644 "$here/albra.service" "$unit"
    install -m 0644 "$here/albra-status-report.service" "$report_service"
    install -m 0644 "$here/albra-status-report.timer" "$report_timer"
    if [[ $system == 1 ]]; then
      systemctl daemon-reload
      systemctl enable --now albra-status-report.timer
      systemctl enable albra.service
      if validate; then
        systemctl restart albra.service
      else
        systemctl stop albra.service 2>/dev/null || true
        echo "albra.service is enabled but NOT started: validate failed (above); fix /etc/albra, then: systemctl start albra" >&2
      fi
    fi
    echo "installed: systemd unit albra.service (logs: journalctl -u albra -f)"
    ;;
  cron)
    if [[ $system == 1 ]] && systemctl list-unit-files albra.service >/dev/null 2>&1; then
      systemctl disable --now albra.service 2>/dev/null || true
      systemctl disable --now albra-status-report.timer 2>/dev/null || true
    fi
    rm -f "$unit" "$report_service" "$report_timer"
    [[ $system == 1 ]] && systemctl daemon-reload 2>/dev/null || true
    install -d -m 0755 "$(dirname "$cronfile")"
    if [[ $system == 1 ]] && ! validate; then
      # Every schedule line commented out: nothing trades until validate passes.
      { echo "# DISABLED by install.sh: albra validate failed; fix /etc/albra and run install.sh again"
        sed -e 's/^\([^#]\)/# \1/' "$here/albra.cron"; } > "$cronfile"
      chmod 0644 "$cronfile"
      echo "cron schedule installed DISABLED: validate failed (above)" >&2
    else
      install -m 0644 "$here/albra.cron" "$cronfile"
    fi
    echo "installed: /etc/cron.d/albra (logs: journalctl -t albra-evaluator -t albra-position-sync)"
    ;;
esac
# Both modes write heartbeats; the check runs from systemd, so it outlives a stopped cron or a
# stalled scheduler.
install -d -m 0755 "$(dirname "$watch_timer")"
install -m 0644 "$here/albra-watch.service" "$watch_service"
install -m 0644 "$here/albra-watch.timer" "$watch_timer"
if [[ $system == 1 ]]; then
  systemctl daemon-reload
  systemctl enable --now albra-watch.timer
fi
echo "edit $etc/albra.toml and $etc/albra.env, then check: sudo -u albra $prefix/bin/albra --config /etc/albra/albra.toml validate"
