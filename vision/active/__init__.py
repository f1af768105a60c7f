"""Active learning: a pool of unlabelled images, an oracle that labels what is queried within a
budget per round, and rounds of query -> label -> retrain. Open-set annotation (the pool also
holds classes nobody asked for: a query spent on one is wasted) is the family's protocol
(:mod:`vision.active.experiment`); one-shot selection for several models at once has its own."""
