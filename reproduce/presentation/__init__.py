"""Looking at results: the paper's tables beside ours, plots, episode panels, figures, HTML
reports and loss curves, read from finished run folders."""
