"""The dev stack: what ``saga dev`` and ``saga demo`` start on one machine.

The embedded Temporal dev server (``_devserver``), localstripe (``_localstripe``), the SMTP
catcher and inventory seeding (``_devstack``), the demo (``_demo``) and the bundled
example plans (``_examples``; the plans themselves ship in ``saga/examples/``).
"""
