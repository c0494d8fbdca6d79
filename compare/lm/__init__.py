"""Language models: the tiny built-in base (`tiny`), loading and saving (`loading`), sampling and log-probs
(`sampling`), and external base models from folders, hub ids, GGUF files or packages (`external`)."""
