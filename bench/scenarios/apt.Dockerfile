# apt: a package from the Debian mirror into the debootstrapped base.
FROM @REG@/bench/debian
RUN apt-get update && apt-get install -y --no-install-recommends jq && rm -rf /var/lib/apt/lists/*
