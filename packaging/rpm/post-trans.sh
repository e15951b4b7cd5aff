# Runs once the whole transaction is done. When this package replaces the original
# message-switch (Obsoletes), the original's %preun runs after our %post and disables the
# unit of the same name: reload, so that systemd sees our unit files; enabling them again
# is the operator's step (docs/deploy.md), as the host's presets decide on a first install.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
