"""The `saga` command line (entry point ``saga.cli._main:run``).

``_main`` parses and dispatches; ``_commands`` talks to sagas through Temporal; ``_serve``
runs the worker, the dev stack and the web app; ``_loading`` reads what a command needs;
``_render`` prints results; ``_live`` redraws a running saga. Status and watch import
neither the Agents SDK nor the web app: the heavy parts load inside the commands that
use them.
"""
