mkdir -p artifacts
cat > artifacts/fizzbuzz.py <<'PY'
def fizzbuzz(n):
    out = []
    for i in range(1, n + 1):
        s = ("Fizz" if i % 3 == 0 else "") + ("Buzz" if i % 5 == 0 else "")
        out.append(s or str(i))
    return out
PY
cat > artifacts/test_fizzbuzz.py <<'PY'
from fizzbuzz import fizzbuzz


def test_fizzbuzz():
    assert fizzbuzz(5) == ["1", "2", "Fizz", "4", "Buzz"]
    assert fizzbuzz(15)[-1] == "FizzBuzz"
PY
echo "Saved both files"
