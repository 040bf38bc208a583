#!/bin/bash
# 32-minute soak: steady publish + churn against a release ssehub, sampled every 60 s.
cd /tmp/soak
./ssehub --listen 127.0.0.1:8099 --log warn > hub.out 2> hub.err &
HUB=$!
sleep 0.5
date -u +%FT%TZ > started
./ssehub-bench run --scenario soak --preset ssehub --port 8099 -n 5000 --rate 10 --duration 1920 --churn-rate 50 --sample-every 60 --server-pid $HUB --json -q > soak.json 2> soak.err
echo "bench exit $?" > done
kill $HUB; wait $HUB; echo "hub exit $?" >> done
