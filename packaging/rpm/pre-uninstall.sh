# %systemd_preun: on removal (not on upgrade), disable and stop the units.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now message-switch.service message-switch.socket >/dev/null 2>&1 || :
fi
