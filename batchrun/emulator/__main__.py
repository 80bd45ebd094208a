"""``python -m batchrun.emulator``: the ``batchrun emulator`` command on its own."""

from batchrun.emulator.command import emulator_command

emulator_command()
