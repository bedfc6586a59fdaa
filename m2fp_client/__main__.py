"""``python -m m2fp_client`` runs the ``m2fp`` command line."""
from m2fp_client.cli import main

main(prog_name="m2fp")
