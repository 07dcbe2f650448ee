from saga.cli._main import run

run()
