mkdir -p artifacts; cd inventory-app && grep -n TODO * > ../artifacts/todos.txt
