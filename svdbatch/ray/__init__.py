"""The Ray adapter: the only package of svdbatch that imports Ray, always inside functions, so importing it is cheap.

Its rooms, in the one direction data and imports flow (each imports only the ones below it):

  driver.py     svdbatch run and the Ray side of svdbatch plan: preflight, the run's lease and commits, stopping
  watch.py      the driver's loop over result batches: watchdog lines, timeouts, halting the stream on a stop
  dataset.py    the Ray Data plan: manifest -> items -> resume join -> generation pool -> rows (and shards)
  actors.py     the generation pool's actor classes (RayRenderer)
  meter.py      the svdbatch_* metrics of one process (the driver or an actor) through Ray
  cluster.py    starting or joining Ray; what the cluster has and can get; the pool's size and strategy
  internals.py  every use of a Ray internal (private modules, keys, classes), one function each, version-checked

The stages it runs (render/) and the rules it applies (run/, store/) know nothing of Ray.
"""
