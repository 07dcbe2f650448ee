from saga._cli import run

run()
