mkdir -p artifacts
printf 'def is_prime(n):\n    return n > 1 and all(n %% d for d in range(2, 10) if d < n)\n' > artifacts/primes.py
