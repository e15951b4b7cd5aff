# %systemd_post: on a first install, enable the units as the host's presets say.
if [ "$1" -eq 1 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload preset message-switch.socket message-switch.service >/dev/null 2>&1 || :
fi
