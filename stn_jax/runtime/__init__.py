"""What keeps a run going and leaves it resumable, for any loop: Orbax checkpoints
(``checkpoint``), the stop on SIGINT/SIGTERM and the wall-clock save clock
(``stopping``), the records (``metrics``), the watchdog on the other processes of a
multi-process run (``peers``), the XLA compiler options (``xla``), the quieting of
background writers (``quiet``) and the named points where tests hook in (``events``).

Nothing here knows a task, a model or a trainer.
"""
