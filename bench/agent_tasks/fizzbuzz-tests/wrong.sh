mkdir -p artifacts
printf 'def fizzbuzz(n):\n    return ["Fizz" if i %% 3 == 0 else "Buzz" if i %% 5 == 0 else str(i) for i in range(1, n + 1)]\n' > artifacts/fizzbuzz.py
printf 'from fizzbuzz import fizzbuzz\n\ndef test_it():\n    assert fizzbuzz(3)[-1] == "Fizz"\n' > artifacts/test_fizzbuzz.py
