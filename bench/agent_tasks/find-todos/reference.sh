mkdir -p artifacts; cd inventory-app && grep -n TODO *.py > ../artifacts/todos.txt; cat ../artifacts/todos.txt
