import os

import matplotlib

matplotlib.use("Agg")
# Tests run two xdist workers on two cores; one torch thread each avoids oversubscription.
os.environ.setdefault("OMP_NUM_THREADS", "1")
