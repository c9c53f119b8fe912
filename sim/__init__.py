"""Running exported networks: the Lava network builder and runner (lava_net), the fast batched integer
engine (engine), `cli.py simulate` (simulate), `cli.py compare` (compare) and `cli.py report` (report).

Modules that run Lava import it before anything else (it fixes multiprocessing's start method)."""
