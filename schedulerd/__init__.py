"""schedulerd: carries batch-job campaigns to PBS, LSF, HTCondor and Slurm heads."""

__version__ = "0.1.0"
