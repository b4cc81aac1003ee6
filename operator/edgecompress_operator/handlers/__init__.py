"""Handler bodies; main.py holds only the kopf decorators that call them."""
