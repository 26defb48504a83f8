from vlcl.app.compare.run import *  # noqa: F403
from vlcl.app.compare.run import LR_GRID, CompareError, Tuning, compare  # noqa: F401
