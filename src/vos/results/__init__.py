"""Results of training runs: finding them on disk (`runs`), tables with the papers' numbers
beside them (`tables`), figures (`figures`), and the papers' ablation tables (`ablation`)."""
