"""Built-in generators (installed as ``gan_inversion_bench.generators``); see ``gan_inversion_bench.registry``."""
