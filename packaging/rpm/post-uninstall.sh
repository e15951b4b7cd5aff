# %systemd_postun_with_restart: reload the unit files; after an upgrade, restart the switch
# if it was running (clients wait in message-switch.socket's backlog meanwhile).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart message-switch.service >/dev/null 2>&1 || :
    fi
fi
