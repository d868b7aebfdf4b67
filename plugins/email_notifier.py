"""Email notifications over the operator's SMTP server, registered through
``loomwork_notifiers`` like any plugin's notifier (chat, SMS).

The runtime queues notifications as jobs (:mod:`loomwork.runtime.jobs`); ``loomwork
worker`` hands each to every notifier. This plugin offers one only when the instance
settings name an SMTP host (``smtp_host``), so an instance without mail sends none.
"""
from __future__ import annotations

import smtplib
from email.message import EmailMessage
from typing import Any

from loomwork.runtime import hookimpl
from loomwork.runtime.context import Context
from loomwork.runtime.jobs import Notification, Notifier


class EmailNotifier:
    """Sends a notification to the user's email address (users without one are skipped).

    :param settings: the instance settings; read are ``smtp_host``, ``smtp_port``,
        ``smtp_from``, ``smtp_user``, ``smtp_password``, ``smtp_starttls`` and
        ``base_url`` (links in the mail are made absolute with it).
    """

    def __init__(self, settings: Any) -> None:
        self.host, self.port = settings.smtp_host, settings.smtp_port
        self.sender, self.user, self.password = settings.smtp_from, settings.smtp_user, settings.smtp_password
        self.starttls, self.base_url = settings.smtp_starttls, settings.base_url.rstrip("/")

    def send(self, ctx: Context, user: dict[str, Any], note: Notification) -> None:
        if not user.get("email"):
            return
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = self.sender, user["email"], note.subject
        link = f"\n\n{self.base_url}{note.link}" if note.link and self.base_url else ""
        msg.set_content(f"{note.body}{link}\n")
        with smtplib.SMTP(self.host, self.port, timeout=30) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.user:
                smtp.login(self.user, self.password)
            smtp.send_message(msg)


@hookimpl
def loomwork_notifiers(settings: Any) -> list[Notifier]:
    return [EmailNotifier(settings)] if settings.smtp_host else []
