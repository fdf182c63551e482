"""`python -m rewardkit.cli ...`: how `accelerate launch -m rewardkit.cli train` runs the CLI."""
from rewardkit.cli import main

if __name__ == "__main__":
    main()
