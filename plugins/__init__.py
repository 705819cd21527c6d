"""kvctl's built-in backend plugins, installed as ``kvctl_plugins``.

Each subpackage registers its schemes through the ``kvctl.backends`` entry-point group exactly as
an outside plugin would, and imports only kvctl's public API (``kvctl.store``, ``kvctl.errors``,
``kvctl.url``, ``kvctl.hlc``; ``kvctl.testing`` in tests).
"""
