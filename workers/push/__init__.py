"""The push client's parts (PURE: only requirements.txt, no Django); the command line is workers.push_client."""
