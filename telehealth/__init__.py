"""The virtual visit: video sessions for virtual Appointments (docs/telemedicine.md).

    settings.py         TelehealthSettings, from the environment
    virtual_service.py  the R5 virtualService cross-version extension on an R4 Appointment
    provider.py         the video-provider interface, and the configured one
    builtin.py          the built-in provider: a peer-to-peer WebRTC room served by this server
    jitsi.py            an external provider: Jitsi rooms with JWT room tokens
    joins.py            the built-in provider's join tokens (stored hashed, expiring)
    signaling.py        the built-in rooms' signaling over the server's websocket
    page.py             the call page and its script (static/), served with no CDN
"""
